"""`examples/recommend.py`: top-k over the whole catalog for every user, in shards that do not depend on the number
of processes, resumable, from a prepared dataset, a raw log or a histories file (tiny ranking head)."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import torch

from allmrec_hf import ALLMRecForConditionalGeneration, ALLMRecForItemRanking, ALLMRecProcessor
from allmrec_hf.data import PreparedDataset
from training_helpers import example_module, run_two_processes

K = 5


@pytest.fixture(scope="module")
def recommend():
    return example_module("recommend")


def command(ranking_run, output, *extra: str) -> list[str]:
    return ["--model_path", ranking_run.output_dir, "--output_dir", str(output), "--k", str(K), *extra]


@pytest.fixture(scope="module")
def one_process(recommend, ranking_run, tiny_dataset, tmp_path_factory):
    output = tmp_path_factory.mktemp("recommend") / "one"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the 2-process run has it (OMP_NUM_THREADS=1): the same sums in the same order
    try:
        manifest = recommend.main(command(ranking_run, output, "--dataset_dir", tiny_dataset, "--shard_size", "5"))
    finally:
        torch.set_num_threads(threads)
    return output, manifest


def by_user(table) -> dict[str, list[tuple[int, str, float]]]:
    out: dict[str, list] = {}
    for row in table.to_pylist():
        out.setdefault(row["user"], []).append((row["rank"], row["item_id"], row["score"]))
    return out


def test_every_user_gets_the_models_top_k_unseen_items(recommend, one_process, ranking_run, tiny_dataset):
    output, manifest = one_process
    data = PreparedDataset.load(tiny_dataset)
    assert manifest["shards"] == [f"shard-{i:05d}.parquet" for i in range(4)]  # 16 users, 5 per shard
    assert manifest["rows"] == data.num_users * K and manifest["histories"]["unknown_interactions"] == 0
    table = recommend.read_recommendations(output)
    assert table.column_names == ["user", "rank", "item_id", "title", "score"]
    got = by_user(table)
    assert list(got) == data.user_ids  # every user, in the dataset's order

    model = ALLMRecForItemRanking.from_pretrained(ranking_run.output_dir).eval()
    processor = ALLMRecProcessor.from_pretrained(ranking_run.output_dir)
    _, items, offsets = data.sequences()
    histories = [items[offsets[u] : offsets[u + 1]].tolist() for u in range(data.num_users)]
    expected = model.recommend(processor, histories, k=K)
    for user, history, recs in zip(data.user_ids, histories, expected, strict=True):
        rows = got[user]
        assert [r[0] for r in rows] == list(range(1, K + 1))
        assert [r[1] for r in rows] == [rec["item_id"] for rec in recs]
        assert [r[2] for r in rows] == pytest.approx([rec["score"] for rec in recs], rel=1e-5)
        assert not {processor.catalog.index(r[1]) for r in rows} & set(history)


def test_two_processes_write_the_same_shards(ranking_run, tiny_dataset, one_process, tmp_path, recommend):
    output = tmp_path / "two"
    args = command(ranking_run, output, "--dataset_dir", tiny_dataset, "--shard_size", "5")
    run_two_processes(args, common_args=[], script="examples/recommend.py", ddp_backend_arg=False)
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["shards"] == one_process[1]["shards"]
    assert recommend.read_recommendations(output).equals(recommend.read_recommendations(one_process[0]))


def test_an_interrupted_run_resumes_with_the_missing_shards_only(recommend, ranking_run, tiny_dataset, one_process,
                                                                 tmp_path):  # fmt: skip
    import shutil

    output = tmp_path / "resumed"
    shutil.copytree(one_process[0], output)
    (output / "manifest.json").unlink()
    (output / "shard-00002.parquet").unlink()  # never written ...
    (output / ".shard-00002.parquet.tmp-123").write_bytes(b"PAR1 cut short")  # ... or cut short by a kill
    kept = {name: os.stat(output / name).st_mtime_ns for name in ("shard-00000.parquet", "shard-00003.parquet")}
    recommend.main(command(ranking_run, output, "--dataset_dir", tiny_dataset, "--shard_size", "5"))
    assert {name: os.stat(output / name).st_mtime_ns for name in kept} == kept
    assert not [name for name in os.listdir(output) if name.startswith(".")]
    assert recommend.read_recommendations(output).equals(recommend.read_recommendations(one_process[0]))


def test_other_settings_or_foreign_files_in_the_output_dir_are_refused(recommend, ranking_run, tiny_dataset,
                                                                        one_process, tmp_path):  # fmt: skip
    import shutil

    output = tmp_path / "again"
    shutil.copytree(one_process[0], output)
    with pytest.raises(SystemExit, match=r"made with other settings \(k\)"):
        recommend.main(command(ranking_run, output, "--dataset_dir", tiny_dataset, "--shard_size", "5", "--k", "3"))
    manifest = recommend.main(
        command(ranking_run, output, "--dataset_dir", tiny_dataset, "--shard_size", "5", "--k", "3",
                "--overwrite_output_dir", "true")
    )  # fmt: skip
    assert manifest["rows"] == 16 * 3
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "checkpoint-5").mkdir()
    with pytest.raises(SystemExit, match=r"holds files this script did not write \(checkpoint-5\)"):
        recommend.main(
            command(ranking_run, tmp_path / "busy", "--dataset_dir", tiny_dataset, "--overwrite_output_dir", "true")
        )
    assert os.listdir(tmp_path / "busy") == ["checkpoint-5"]


def test_a_histories_file_with_unknown_items_allowed_items_and_keep_seen(recommend, ranking_run, tmp_path, caplog):
    processor = ALLMRecProcessor.from_pretrained(ranking_run.output_dir)
    ids = [processor.catalog.item_id(i) for i in range(1, processor.catalog.num_items + 1)]
    rows = [{"user": "a", "history": ids[:3] + ["no-such-item"]}, {"user": "b", "history": ["gone"]},
            {"user": "c", "history": []}]  # fmt: skip
    path = tmp_path / "histories.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    allowed = tmp_path / "allowed.txt"
    allowed.write_text("\n".join(ids[:4]) + "\n")
    with caplog.at_level("WARNING"):
        manifest = recommend.main(
            command(ranking_run, tmp_path / "out", "--histories_path", str(path), "--allowed_items", str(allowed),
                    "--output_format", "jsonl")
        )  # fmt: skip
    assert manifest["histories"]["unknown_interactions"] == 2 and manifest["histories"]["unknown_items"] == 2
    assert manifest["histories"]["users_left_without_known_items"] == 1
    assert any("no-such-item" in r.getMessage() for r in caplog.records)
    got = by_user(recommend.read_recommendations(tmp_path / "out"))
    assert [r[1] for r in got["a"]] == [ids[3]]  # allowed and unseen: one item left, and a warning says so
    assert sorted(r[1] for r in got["b"]) == sorted(ids[:4]) and len(got["c"]) == 4
    assert any("fewer than 5 items left" in r.getMessage() for r in caplog.records)
    kept = recommend.main(
        command(ranking_run, tmp_path / "kept", "--histories_path", str(path), "--allowed_items", str(allowed),
                "--keep_seen", "true")
    )  # fmt: skip
    assert by_user(recommend.read_recommendations(tmp_path / "kept"))["a"][0][0] == 1 and kept["rows"] == 12


def test_a_raw_log_is_read_in_time_order(recommend, ranking_run, tmp_path):
    processor = ALLMRecProcessor.from_pretrained(ranking_run.output_dir)
    ids = [processor.catalog.item_id(i) for i in (1, 2, 3)]
    log = tmp_path / "log.csv"
    log.write_text(f"user_id,item_id,timestamp\nu,{ids[2]},30\nu,{ids[0]},10\nu,{ids[1]},20\n")
    from_log = recommend.main(command(ranking_run, tmp_path / "log", "--format", "csv", "--input_path", str(log)))
    path = tmp_path / "h.parquet"
    pq.write_table(__import__("pyarrow").table({"user": ["u"], "history": [ids]}), path)
    from_file = recommend.main(command(ranking_run, tmp_path / "file", "--histories_path", str(path)))
    assert from_log["settings"]["histories_sha256"] == from_file["settings"]["histories_sha256"]
    assert recommend.read_recommendations(tmp_path / "log").equals(recommend.read_recommendations(tmp_path / "file"))


def test_the_papers_model_retrieves_with_its_cf_model_and_reranks_with_the_lm(
    recommend, stage2_runs, tiny_dataset, tmp_path
):
    run = stage2_runs["a-llmrec"]
    allowed = tmp_path / "allowed.txt"
    data = PreparedDataset.load(tiny_dataset)
    allowed_ids = [data.catalog.item_id(i) for i in range(1, data.num_items + 1, 2)]  # every other item
    allowed.write_text("\n".join(allowed_ids) + "\n")
    output = tmp_path / "out"
    manifest = recommend.main(["--model_path", run.output_dir, "--output_dir", str(output), "--k", "3",
                               "--num_retrieved", "6", "--dataset_dir", tiny_dataset, "--allowed_items", str(allowed),
                               "--batch_size", "4"])  # fmt: skip
    assert manifest["settings"]["num_retrieved"] == 6 and manifest["rows"] == data.num_users * 3
    got = by_user(recommend.read_recommendations(output))

    model = ALLMRecForConditionalGeneration.from_pretrained(run.output_dir).eval()
    processor = ALLMRecProcessor.from_pretrained(run.output_dir)
    _, items, offsets = data.sequences()
    keep = torch.zeros(data.num_items + 1, dtype=torch.bool)
    keep[[processor.catalog.index(i) for i in allowed_ids]] = True
    for user_index, user in enumerate(data.user_ids):
        history = items[offsets[user_index] : offsets[user_index + 1]].tolist()
        cf_scores = model.recommender.cf_model.score_all_items(processor(histories=[history])["cf_input_ids"])[0]
        cf_scores[~keep] = float("-inf")
        cf_scores[sorted(set(history))] = float("-inf")
        retrieved = cf_scores.topk(6).indices.tolist()  # what the CF model retrieves, then the LM's order
        expected = model.rank_candidates(processor, [history], [retrieved], k=3)[0]
        rows = got[user]
        assert [r[1] for r in rows] == [rec["item_id"] for rec in expected], user
        assert [r[2] for r in rows] == pytest.approx([rec["score"] for rec in expected], rel=1e-4, abs=1e-4)
        assert {r[1] for r in rows} <= set(allowed_ids) and not {processor.catalog.index(r[1]) for r in rows} & set(
            history
        )


def test_a_checkpoint_of_another_kind_is_refused(recommend, cf_run, tmp_path):
    with pytest.raises(SystemExit, match=r"is a 'sasrec' checkpoint: recommend.py takes a ranking head"):
        recommend.main(["--model_path", cf_run.output_dir, "--output_dir", str(tmp_path / "out"), "--dataset_dir",
                        str(tmp_path)])  # fmt: skip
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --dataset_dir"),
        (["--histories_path", "h.jsonl", "--format", "csv"], "--format reads the log given by --input_path"),
        (["--input_path", "log.csv"], "--input_path needs --format"),
        (["--histories_path", "x.jsonl", "--k", "0"], "--k must be a positive integer"),
        (["--histories_path", "x.jsonl", "--num_retrieved", "3"], r"--num_retrieved \(3\) must be at least --k \(5\)"),
        (["--histories_path", "missing.jsonl"], "histories file not found"),
    ],
)
def test_bad_arguments_are_refused(recommend, ranking_run, tmp_path, extra, message):
    with pytest.raises((SystemExit, FileNotFoundError), match=message):
        recommend.main(command(ranking_run, tmp_path / "out", *extra))
    assert not (tmp_path / "out").exists()
