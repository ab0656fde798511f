import pytest
import torch

from gsmflow_nflows.evaluation import GZSLScores, evaluate_gzsl, evaluate_zsl

SEEN, UNSEEN, DIM = 2, 2, 6


def toy_split(seed=0):
    """Four well-separated classes: 0, 1 seen; 2, 3 unseen (local unseen labels 0, 1)."""
    g = torch.Generator().manual_seed(seed)
    centers = 4 * torch.randn(SEEN + UNSEEN, DIM, generator=g)

    def sample(classes, per_class):
        labels = torch.tensor(classes).repeat_interleave(per_class)
        return centers[labels] + 0.3 * torch.randn(labels.numel(), DIM, generator=g), labels

    seen_x, seen_y = sample([0, 1], 20)
    gen_x, gen_y = sample([2, 3], 20)
    test_seen_x, test_seen_y = sample([0, 1], 10)
    test_unseen_x, test_unseen_y = sample([2, 3], 10)
    return {
        "seen_features": seen_x,
        "seen_labels": seen_y,
        "generated_features": gen_x,
        "generated_labels": gen_y - SEEN,
        "test_seen_features": test_seen_x,
        "test_seen_labels": test_seen_y,
        "test_unseen_features": test_unseen_x,
        "test_unseen_labels": test_unseen_y - SEEN,
    }


def test_evaluate_gzsl_scores_every_epoch(generator):
    data = toy_split()
    scores = evaluate_gzsl(
        **data,
        num_seen=SEEN,
        num_unseen=UNSEEN,
        lr=0.1,
        batch_size=16,
        epochs=4,
        generator=generator,
    )
    assert len(scores) == 4
    assert all(isinstance(s, GZSLScores) for s in scores)
    assert scores[-1].S > 0.9 and scores[-1].U > 0.9 and scores[-1].H > 0.9


def test_evaluate_gzsl_shifts_generated_labels():
    # If the generated unseen features were labelled as seen classes (no shift),
    # unseen test images could never be right. Swap the unseen test labels
    # instead: then U must collapse, which proves outputs S.. are the unseen ones.
    data = toy_split()
    data["test_unseen_labels"] = 1 - data["test_unseen_labels"]
    scores = evaluate_gzsl(
        **data,
        num_seen=SEEN,
        num_unseen=UNSEEN,
        lr=0.1,
        batch_size=16,
        epochs=4,
        generator=torch.Generator().manual_seed(0),
    )
    assert scores[-1].U < 0.1 and scores[-1].S > 0.9


def test_evaluate_zsl(generator):
    data = toy_split()
    top1 = evaluate_zsl(
        generated_features=data["generated_features"],
        generated_labels=data["generated_labels"],
        test_unseen_features=data["test_unseen_features"],
        test_unseen_labels=data["test_unseen_labels"],
        num_unseen=UNSEEN,
        lr=0.1,
        batch_size=1000,
        epochs=3,
        generator=generator,
    )
    assert len(top1) == 3
    assert top1[-1] > 0.9


def test_evaluate_gzsl_is_keyword_only():
    with pytest.raises(TypeError):
        evaluate_gzsl(*toy_split().values())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"generated_labels": torch.full((40,), 2)}, r"generated_labels in \[0, 1\]"),
        ({"test_seen_labels": torch.full((20,), 2)}, r"test_seen_labels in \[0, 1\]"),
        ({"test_unseen_features": torch.randn(20, DIM + 1)}, f"with {DIM} features, got {DIM + 1}"),
        ({"seen_labels": torch.zeros(3, dtype=torch.long)}, "40 entries"),
    ],
)
def test_evaluate_gzsl_validation(change, match):
    data = toy_split()
    data.update(change)
    with pytest.raises(ValueError, match=match):
        evaluate_gzsl(**data, num_seen=SEEN, num_unseen=UNSEEN, lr=0.1, batch_size=4, epochs=1)


def test_evaluate_zsl_validation():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluate_zsl(
            generated_features=torch.randn(4, 3),
            generated_labels=torch.tensor([0, 1, 2, 0]),
            test_unseen_features=torch.randn(2, 3),
            test_unseen_labels=torch.tensor([0, 1]),
            num_unseen=2,
            lr=0.1,
            batch_size=4,
            epochs=1,
        )
