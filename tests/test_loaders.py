import numpy as np
import torch

from recmig.data.loaders import (
    CrossDomainDataModule,
    LoaderConfig,
    ScenarioTensors,
    history_tokens,
    sequence_windows,
)
from recmig.data.scenario import TARGET, build_scenario
from recmig.tokens import STREAM_ID


def test_history_tokens_prefix_bos_only_when_it_fits():
    assert history_tokens([5, 6], 4, bos=9).tolist() == [9, 5, 6, 0]
    assert history_tokens([1, 2, 3, 4, 5], 4, bos=9).tolist() == [2, 3, 4, 5]
    assert history_tokens([], 3, bos=9).tolist() == [9, 0, 0]


def test_windows_predict_every_item_once_with_its_predecessors():
    seq = np.arange(1, 8)  # items 1..7
    inputs, labels = sequence_windows(seq, max_len=3, bos=99)
    predicted = sorted(labels[labels != 0].tolist())
    assert predicted == seq.tolist()
    for x, y in zip(inputs, labels, strict=True):
        for pos in range(len(y)):
            if y[pos] == 0:
                continue
            previous = 99 if y[pos] == 1 else y[pos] - 1
            assert x[pos] == previous  # input at a position is the item just before its label


def test_datamodule_streams_and_eval_masks(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, max_len=8)
    dm = CrossDomainDataModule(tensors, ("source", "target", "overlap"), LoaderConfig(max_len=8))
    streams = set(dm.train_data["stream"].tolist())
    assert streams == {STREAM_ID["source"], STREAM_ID["target"], STREAM_ID["overlap"]}
    target_rows = dm.train_data["stream"] == STREAM_ID["target"]
    labels = dm.train_data["labels"][target_rows]
    labels = labels[labels != 0]
    assert (torch.from_numpy(scenario.item_domain)[labels] == TARGET).all()
    assert len(labels) == (scenario.train["domain"] == TARGET).sum()

    for split in ("val", "test"):
        for batch in dm.eval_data[split]:
            assert (batch["relevant"].sum(1) >= 1).all()
            assert not (batch["relevant"] & batch["excluded"]).any()
            cold = batch["is_cold"]
            assert not batch["excluded"][cold].any()  # cold users saw nothing in the target
            # Cold users' target history is empty: just BOS.
            assert (batch["target_hist"][cold][:, 0] == tensors.bos).all()
            assert (batch["target_hist"][cold][:, 1:] == 0).all()
    test_warm = [b for b in dm.eval_data["test"]][0]
    val_warm = [b for b in dm.eval_data["val"]][0]
    warm = ~test_warm["is_cold"]
    # At test time the validation item joins the history and is excluded from the ranking.
    assert (test_warm["excluded"][warm].sum(1) == val_warm["excluded"][warm].sum(1) + 1).all()


def test_item_masking_drops_inputs_but_keeps_labels_and_bos(data, scenario_cfg):
    scenario = build_scenario(data, scenario_cfg)
    tensors = ScenarioTensors(scenario, max_len=8)
    plain = CrossDomainDataModule(tensors, ("target",), LoaderConfig(max_len=8))
    masked = CrossDomainDataModule(
        tensors, ("target",), LoaderConfig(max_len=8, item_mask_prob=0.5)
    )
    index = list(range(len(plain.train_data["user"])))
    torch.manual_seed(0)
    a, b = plain._train_batch(index), masked._train_batch(index)
    assert torch.equal(a["labels"], b["labels"])
    dropped = a["tokens"] != b["tokens"]
    assert (b["tokens"][dropped] == 0).all()
    real = (a["tokens"] != 0) & (a["tokens"] != tensors.bos)
    assert 0.4 < dropped.sum() / real.sum() < 0.6
    assert ((a["tokens"] == tensors.bos) == (b["tokens"] == tensors.bos)).all()


def test_items_by_user_is_groupby_agg_list_without_the_python_loop():
    import pandas as pd

    from recmig.data.tensors import items_by_user

    rng = np.random.default_rng(0)
    rows = pd.DataFrame({"user": rng.integers(0, 50, 1000), "item": rng.integers(1, 99, 1000)})
    expected = rows.groupby("user")["item"].agg(list).to_dict()
    got = items_by_user(rows)
    assert list(got) == list(expected) and all(got[u] == list(expected[u]) for u in got)
    assert items_by_user(rows.iloc[:0]) == {}
