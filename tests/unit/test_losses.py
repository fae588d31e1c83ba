"""Losses and the memory bank on tiny seeded tensors (learner.losses)."""
import pytest
import torch
from torch.nn import functional as F

from learner import losses


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_classification_loss_shape_and_gradients():
    logits_v = torch.randn(6, 4, requires_grad=True)
    logits_t = torch.randn(6, 4, requires_grad=True)
    labels = (torch.rand(6, 4) < 0.5).float()
    loss = losses.classification_loss(logits_v, logits_t, labels)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(logits_v.grad).all() and torch.isfinite(logits_t.grad).all()


def test_info_nce_lower_for_aligned_pairs_and_equals_cross_entropy_at_beta_zero():
    mu_v = _unit(8, 16)
    aligned = losses.info_nce(mu_v, mu_v.clone(), temperature=0.1)
    shuffled = losses.info_nce(mu_v, mu_v[torch.randperm(8, generator=torch.Generator().manual_seed(1))], temperature=0.1)
    assert aligned < shuffled
    mu_t = _unit(8, 16, seed=2)
    sim = mu_v @ mu_t.T / 0.1
    target = torch.arange(8)
    expected = 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))
    assert losses.info_nce(mu_v, mu_t, 0.1) == pytest.approx(float(expected), rel=1e-5)


def test_sede_weights_change_the_loss_and_keep_gradients_finite():
    mu_v = _unit(8, 16).requires_grad_(True)
    mu_t = _unit(8, 16, seed=3)
    plain = losses.info_nce(mu_v, mu_t, 0.1)
    hard = losses.info_nce(mu_v, mu_t, 0.1, hard_negative_beta=5.0)
    hard.backward()
    assert float(hard.detach()) != pytest.approx(float(plain.detach())) and torch.isfinite(mu_v.grad).all()


def test_jaccard_weights():
    labels = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.float32)
    j = losses.jaccard_matrix(labels, labels)
    assert j[0, 1] == pytest.approx(0.5)        # {a,b} vs {a}: 1 / 2
    assert j[0, 2] == 0 and j[0, 0] == 1
    assert j[3, 3] == 0                          # two empty label sets share no label


def test_soft_contrastive_equals_info_nce_when_all_labels_differ():
    mu_v, mu_t = _unit(5, 8), _unit(5, 8, seed=4)
    labels = torch.eye(5)
    assert losses.soft_multilabel_contrastive(mu_v, mu_t, labels, 0.2) == pytest.approx(
        float(losses.info_nce(mu_v, mu_t, 0.2)), rel=1e-5)


def test_soft_contrastive_rewards_same_label_neighbours():
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=torch.float32)
    class_aligned = F.normalize(labels + 0.01 * torch.arange(4.0)[:, None], dim=1)
    random = _unit(4, 2, seed=5)
    assert losses.soft_multilabel_contrastive(class_aligned, class_aligned, labels, 0.1) < \
        losses.soft_multilabel_contrastive(random, random.flip(0), labels, 0.1)


def test_kl_zero_at_standard_normal_and_positive_elsewhere():
    assert float(losses.kl_to_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4))) == 0.0
    assert losses.kl_to_standard_normal(torch.full((3, 4), 0.5), torch.full((3, 4), -2.0)) > 0


def test_pcme_match_loss_gradients_reach_a_b_and_samples():
    z_v = torch.randn(6, 2, 8, requires_grad=True)
    z_t = torch.randn(6, 2, 8)
    a = torch.tensor(5.0, requires_grad=True)
    b = torch.tensor(2.0, requires_grad=True)
    loss = losses.pcme_match_loss(z_v, z_t, a, b)
    loss.backward()
    assert torch.isfinite(loss) and a.grad is not None and b.grad is not None and torch.isfinite(z_v.grad).all()


def test_knn_label_propagation_on_a_constructed_bank():
    # Bank: items 0, 1 near e1 with label A; items 2, 3 near e2 with label B. Query = item 0 itself.
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    bank_mu = F.normalize(torch.stack([e1, e1 + 0.1 * e2, e2, e2 + 0.1 * e1]), dim=1)
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    exclude = torch.tensor([[True, False, False, False]])
    q = losses.knn_label_propagation(bank_mu[:1], bank_mu, targets, k=1, temperature=0.1, exclude=exclude)
    assert torch.allclose(q, torch.tensor([[1.0, 0.0]]))       # nearest other item is 1 (label A)
    # k = 3 (all others): weights softmax(s/0.1) over items 1, 2, 3 with s = 0.995, 0.0, 0.0995
    q3 = losses.knn_label_propagation(bank_mu[:1], bank_mu, targets, k=3, temperature=0.1, exclude=exclude)
    s = bank_mu[1:] @ bank_mu[0]
    w = torch.softmax(s / 0.1, dim=0)
    assert torch.allclose(q3, torch.tensor([[w[0], w[1] + w[2]]]), atol=1e-6)


def test_adjust_pseudo_labels_keeps_confident_classes_only():
    q = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    p = torch.tensor([[0.9, 0.1], [0.5, 0.5]])
    targets, weights = losses.adjust_pseudo_labels(q, p, threshold=0.8)
    # row 0: sqrt(q*p) = [0.949, 0], rescaled to sum 1 -> [1, 0]: confident, targets [1, 0], weights [1, 1]
    assert torch.allclose(targets[0], torch.tensor([1.0, 0.0])) and torch.allclose(weights[0], torch.ones(2))
    # row 1: [0.5, 0.5] -> confidence 0.5 < 0.8: nothing kept
    assert torch.all(weights[1] == 0)
    assert losses.weighted_bce(torch.randn(2, 2), targets, torch.zeros(2, 2)) == 0


def test_memory_bank_momentum_update():
    bank = losses.MemoryBank(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]),
                             torch.tensor([[0.0]]), torch.tensor([[1.0]]), momentum=0.5)
    bank.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]]),
                torch.tensor([[1.0]]), torch.tensor([[0.0]]))
    assert torch.allclose(bank.mu_image, torch.tensor([[2 ** -0.5, 2 ** -0.5]]))
    assert torch.allclose(bank.probs_image, torch.tensor([[0.5]])) and torch.allclose(bank.probs_text, torch.tensor([[0.5]]))
    with pytest.raises(ValueError, match="momentum"):
        losses.MemoryBank(bank.mu_image, bank.mu_text, bank.probs_image, bank.probs_text, momentum=1.0)


def test_pair_weights_take_a_pair_out_as_a_positive_of_every_pairing_term():
    """Weight 0 on pair 0 (its caption does not describe its image): InfoNCE is the loss of the other
    pairs alone (pair 0 is no negative either), the PCME positives average the other pairs only, DAGNN
    leaves caption 0 out (as a positive and a candidate, and its own row), the text branch's BCE skips it;
    weights of 1 give the unweighted losses."""
    mu_v, mu_t = _unit(6, 8), _unit(6, 8, seed=5)
    w = torch.tensor([0.0, 1, 1, 1, 1, 1])
    ones = torch.ones(6)
    sim = mu_v @ mu_t.T / 0.2
    target = torch.arange(6)
    rest = sim[1:, 1:]                        # pair 0 is neither a positive nor a negative of the others
    rows = 0.5 * (F.cross_entropy(rest, target[:5], reduction="none") + F.cross_entropy(rest.T, target[:5], reduction="none"))
    assert losses.info_nce(mu_v, mu_t, 0.2, weights=w) == pytest.approx(float(rows.mean()), rel=1e-5)
    half = torch.tensor([0.5, 1, 1, 1, 1, 1])
    soft_logits = sim + torch.log(half).unsqueeze(0) * (1 - torch.eye(6))   # column 0 counts half as a negative
    soft_rows = 0.5 * (F.cross_entropy(soft_logits, target, reduction="none")
                       + F.cross_entropy(sim.T + torch.log(half).unsqueeze(0) * (1 - torch.eye(6)), target, reduction="none"))
    assert losses.info_nce(mu_v, mu_t, 0.2, weights=half) == pytest.approx(
        float((half * soft_rows).sum() / half.sum()), rel=1e-5)
    assert losses.info_nce(mu_v, mu_t, 0.2, weights=ones) == pytest.approx(float(losses.info_nce(mu_v, mu_t, 0.2)), rel=1e-5)
    assert losses.info_nce(mu_v, mu_t, 0.2, weights=torch.zeros(6)) == 0.0

    z_v, z_t = mu_v.unsqueeze(1).repeat(1, 2, 1), mu_t.unsqueeze(1).repeat(1, 2, 1)
    a, b = torch.tensor(5.0), torch.tensor(2.0)
    p = torch.sigmoid(-a * torch.cdist(mu_v, mu_t) + b).clamp(1e-6, 1 - 1e-6)
    eye = torch.eye(6, dtype=torch.bool)
    expected = -torch.log(p.diagonal()[1:]).mean() - torch.log1p(-p[~eye]).mean()
    assert losses.pcme_match_loss(z_v, z_t, a, b, weights=w) == pytest.approx(float(expected), rel=1e-4)

    labels = torch.eye(6)                     # no pair shares a label: pair 0's only positive is itself
    dagnn = losses.soft_multilabel_contrastive(mu_v, mu_t, labels, 0.2, pair_weights=w)
    i2t_rows = -rest.log_softmax(1).diagonal()              # caption 0 is no candidate of any image
    t2i_rows = -sim.T.log_softmax(1).diagonal()[1:]         # caption 0's own row is out of the mean
    assert dagnn == pytest.approx(float(0.5 * (i2t_rows.sum() / 6 + t2i_rows.mean())), rel=1e-5)
    assert losses.soft_multilabel_contrastive(mu_v, mu_t, labels, 0.2, pair_weights=ones) == pytest.approx(
        float(losses.soft_multilabel_contrastive(mu_v, mu_t, labels, 0.2)), rel=1e-6)

    logits_v, logits_t = torch.randn(6, 3), torch.randn(6, 3)
    y = (torch.rand(6, 3) < 0.5).float()
    text_rows = F.binary_cross_entropy_with_logits(logits_t, y, reduction="none").mean(1)
    expected_cls = 0.5 * (F.binary_cross_entropy_with_logits(logits_v, y) + text_rows[1:].mean())
    assert losses.classification_loss(logits_v, logits_t, y, w) == pytest.approx(float(expected_cls), rel=1e-5)


def test_a_caption_at_weight_0_takes_no_part_in_dagnn_even_when_its_image_shares_labels():
    """Pairs 0 and 1 share a label, and pair 0's caption is swapped in from elsewhere (weight 0): it must not
    be a soft positive of image 1 (its labels are its image's, not its own), nor a candidate, nor a query.
    Its embedding then gets no gradient; at weight 1 it does."""
    mu_v = _unit(4, 8)
    labels = torch.tensor([[1.0, 0], [1, 0], [0, 1], [0, 1]])
    for weight, moved in ((0.0, False), (1.0, True)):
        mu_t = _unit(4, 8, seed=3).requires_grad_(True)
        w = torch.tensor([weight, 1, 1, 1])
        losses.soft_multilabel_contrastive(mu_v, mu_t, labels, 0.2, pair_weights=w).backward()
        assert (mu_t.grad[0].abs().max() > 1e-4) == moved, mu_t.grad[0]
        assert mu_t.grad[1:].abs().max() > 1e-4


def test_the_dagnn_pull_on_a_caption_falls_smoothly_to_zero_with_its_weight():
    """A suspected caption (small P(clean), never exactly 0) must not be taught as fully as a clean one:
    the gradient on it shrinks with its weight instead of jumping to 0 only at w = 0."""
    mu_v, labels = _unit(6, 8), torch.eye(6)
    pulls = []
    for weight in (1.0, 0.1, 0.01, 0.0):
        mu_t = _unit(6, 8, seed=5).requires_grad_(True)
        losses.soft_multilabel_contrastive(mu_v, mu_t, labels, 0.2,
                                           pair_weights=torch.tensor([weight, 1, 1, 1, 1, 1])).backward()
        pulls.append(float(mu_t.grad[0].norm()))
    assert pulls[0] > pulls[1] > pulls[2] > pulls[3] and pulls[3] < 1e-9, pulls
    assert pulls[2] < 0.05 * pulls[0], pulls
