import math

import numpy as np
import pytest
import torch

from segtrain.evaluation.metrics import confusion_matrix, row_scores, scores


def test_confusion_matrix_counts_truth_rows_prediction_columns_and_skips_ignored():
    truth = torch.tensor([[0, 0, 1], [1, 2, 255]])
    pred = torch.tensor([[0, 1, 1], [2, 2, 0]])
    hist = confusion_matrix(truth, pred, 3)
    assert hist.tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_scores_match_hand_computed_values():
    hist = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    # class 2 is absent from truth and prediction: NaN recall and IoU, skipped by the means
    s = scores(hist)
    assert s["acc"] == 7 / 10
    assert math.isclose(s["acc_cls"], (3 / 4 + 4 / 6) / 2)
    iou0, iou1 = 3 / (4 + 5 - 3), 4 / (6 + 5 - 4)
    assert math.isclose(s["mean_iu"], (iou0 + iou1) / 2)
    assert math.isclose(s["fwavacc"], 0.4 * iou0 + 0.6 * iou1)
    assert math.isnan(s["iu"][2]) and math.isnan(s["recall"][2])
    assert s["pixels"] == [4, 6, 0]
    assert math.isclose(s["precision"][0], 3 / 5) and math.isclose(s["f1"][1], 2 * 4 / (6 + 5))


def test_class_predicted_but_absent_from_truth_has_iou_zero_and_nan_recall():
    hist = torch.tensor([[5, 1], [0, 0]])
    s = scores(hist)
    assert s["iu"][1] == 0.0
    assert math.isnan(s["recall"][1])
    assert math.isclose(s["acc_cls"], 5 / 6)
    assert math.isclose(s["mean_iu"], (5 / 6 + 0) / 2)
    assert math.isclose(s["fwavacc"], 1.0 * 5 / 6)


def test_empty_matrix_gives_nan_not_an_exception():
    s = scores(torch.zeros(2, 2, dtype=torch.long))
    assert math.isnan(s["acc"]) and math.isnan(s["mean_iu"])
    assert all(math.isnan(v) for v in row_scores(torch.zeros(2, 2, dtype=torch.long)).values())


def numpy_reference(hist: torch.Tensor) -> dict:
    """The four scores the way the original tool computed them (torchfcn's label_accuracy_score)."""
    h = hist.numpy().astype(np.float64)
    diag, truth, predicted, total = np.diag(h), h.sum(1), h.sum(0), h.sum()
    if total == 0:  # nothing counted: every score undefined (test_empty_matrix_gives_nan_not_an_exception)
        return dict.fromkeys(("acc", "acc_cls", "mean_iu", "fwavacc"), math.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / (truth + predicted - diag)
        freq = truth / total
        return {"acc": diag.sum() / total, "acc_cls": np.nanmean(diag / truth), "mean_iu": np.nanmean(iou),
                "fwavacc": (freq[freq > 0] * iou[freq > 0]).sum()}


def test_training_row_scores_are_the_hand_computed_values_and_agree_with_the_original_formulas():
    hist = torch.tensor([[3, 1, 0], [2, 4, 0], [0, 0, 0]])
    row = row_scores(hist)
    iou0, iou1 = 3 / (4 + 5 - 3), 4 / (6 + 5 - 4)
    assert row["acc"] == 7 / 10
    assert math.isclose(row["acc_cls"], (3 / 4 + 4 / 6) / 2)
    assert math.isclose(row["mean_iu"], (iou0 + iou1) / 2)
    assert math.isclose(row["fwavacc"], 0.4 * iou0 + 0.6 * iou1)
    # absent classes, a class predicted but never true, and many classes, against NumPy's formulas
    g = torch.Generator().manual_seed(0)
    for n in (2, 3, 8, 12, 19):
        for _ in range(20):
            hist = torch.randint(0, 50, (n, n), generator=g) * (torch.rand(n, n, generator=g) < 0.6)
            hist[n - 1] = 0  # the last class never in the truth
            want, got = numpy_reference(hist), row_scores(hist)
            for key in ("acc", "acc_cls", "mean_iu", "fwavacc"):
                assert got[key] == pytest.approx(want[key], rel=1e-12, nan_ok=True), (key, hist)


def test_class_map_equals_argmax_including_ties():
    from segtrain.evaluation.argmax import class_map

    logits = torch.randn(2, 3, 5, 7)
    logits[0, :, 0, 0] = 1.0  # a three-way tie: the first class wins, as with argmax
    logits[1, 1:, 2, 3] = 4.0  # a tie between classes 1 and 2
    assert torch.equal(class_map(logits, 1), logits.argmax(1))
    assert class_map(logits, 1)[0, 0, 0] == 0 and class_map(logits, 1)[1, 2, 3] == 1
    assert torch.equal(class_map(logits[0], 0), logits[0].argmax(0))
    two = torch.randn(2, 2, 5, 7)  # two classes take a shortcut: the same indices, ties to class 0
    two[0, :, 1, 1] = 2.0
    assert torch.equal(class_map(two, 1), two.argmax(1)) and class_map(two, 1)[0, 1, 1] == 0
    assert torch.equal(class_map(two[1], 0), two[1].argmax(0)) and class_map(two, 1).dtype == torch.long


@pytest.mark.parametrize("bad", [-1, 3, 7])
def test_prediction_outside_the_classes_is_an_error_not_a_wrong_cell(bad):
    truth = torch.tensor([[0, 1, 2, 255]])
    pred = torch.tensor([[0, 1, bad, 0]])  # 3 would count in row 2 as class 0's cell of the next row
    with pytest.raises(RuntimeError, match=r"predictions must be class indices 0\.\.2"):
        confusion_matrix(truth, pred, 3)
    assert confusion_matrix(truth, torch.tensor([[0, 1, 2, 2]]), 3).sum() == 3
