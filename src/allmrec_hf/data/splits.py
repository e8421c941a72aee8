"""Leave-one-out splits as Arrow tables: one row per user with `user`, `history` and `target`.

Users and items are 1-based indices (0 is padding). For a user with n >= 3 interactions in time order
i_1 .. i_n: test = (i_1..i_{n-1} -> i_n), validation = (i_1..i_{n-2} -> i_{n-1}), train = (i_1..i_{n-3} -> i_{n-2}),
so the training sequence is i_1..i_{n-2}. Users with fewer than 3 interactions are train-only with their whole
sequence. Histories are complete (not cut to a maximum length; the processor and the CF model keep the most recent).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .preprocess import EncodedLog

MIN_EVALUATION_INTERACTIONS = 3
SPLIT_COLUMNS = ("user", "history", "target")


def leave_one_out(encoded: EncodedLog, held_out_users: np.ndarray | None = None) -> dict[str, pa.Table]:
    """The `train`, `validation` and `test` tables (and `cold_users` when `held_out_users` is given: those users,
    0-based codes, are left out of the other three and get one row predicting their last item from the rest).

    Example:

    ```python
    >>> import numpy as np
    >>> from allmrec_hf.data.preprocess import EncodedLog
    >>> import pandas as pd
    >>> log = EncodedLog(users=np.array([0, 0, 0, 0, 1]), items=np.array([3, 1, 0, 2, 1]),
    ...                  user_ids=["a", "b"], item_ids=["w", "x", "y", "z"], item_text=pd.DataFrame())
    >>> {name: table.to_pylist() for name, table in leave_one_out(log).items()}["test"]
    [{'user': 1, 'history': [4, 2, 1], 'target': 3}]
    ```
    """
    offsets = encoded.user_offsets()
    counts = np.diff(offsets)
    users = encoded.users.astype(np.int64)
    positions = np.arange(users.size, dtype=np.int64) - offsets[users]
    items1 = encoded.items.astype(np.int64) + 1

    is_held_out = np.zeros(counts.size, dtype=bool)
    if held_out_users is not None and held_out_users.size:
        is_held_out[held_out_users] = True
    evaluable = (counts >= MIN_EVALUATION_INTERACTIONS) & ~is_held_out
    present = (counts > 0) & ~is_held_out
    train_length = np.where(evaluable, counts - 2, counts)

    def rows(selected_mask: np.ndarray, history_length: np.ndarray) -> pa.Table:
        selected = np.flatnonzero(selected_mask)
        user_selected = selected_mask[users]
        mask = user_selected & (positions < history_length[users])
        lengths = history_length[selected]
        list_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        history = pa.ListArray.from_arrays(pa.array(list_offsets, type=pa.int32()), pa.array(items1[mask], pa.int32()))
        targets = items1[offsets[selected] + history_length[selected]]
        return pa.table(
            {
                "user": pa.array(selected + 1, type=pa.int32()),
                "history": history,
                "target": pa.array(targets, type=pa.int32()),
            }
        )

    tables = {
        "train": rows(present, np.maximum(train_length - 1, 0)),
        "validation": rows(evaluable, counts - 2),
        "test": rows(evaluable, counts - 1),
    }
    if held_out_users is not None:
        tables["cold_users"] = rows(is_held_out, counts - 1)
    return tables
