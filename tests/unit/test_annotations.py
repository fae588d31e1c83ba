"""Deriving a pair's current label from its append-only events (pure function)."""
from datetime import datetime

from storage.annotations import EventRow, derive_label

T = datetime(2026, 1, 1)


def ev(id, user, kind="submit", labels=("cat",), verdict="match", undoes=None):
    return EventRow(id, user, kind, None if labels is None else tuple(labels), verdict, undoes, T)


def test_no_events_is_unlabelled():
    label = derive_label(1, [])
    assert label.labels is None and label.status == "unlabelled" and not label.needs_review


def test_single_annotator_latest_submission_wins():
    label = derive_label(1, [ev(1, "ann", labels=["cat"]), ev(2, "ann", labels=["dog"])])
    assert label.labels == ("dog",) and label.status == "labelled" and label.agreement is None


def test_empty_label_set_is_labelled_not_unlabelled():
    label = derive_label(1, [ev(1, "ann", labels=[])])
    assert label.labels == () and label.status == "labelled"


def test_majority_of_three_and_agreement():
    events = [ev(1, "a", labels=["cat", "dog"]), ev(2, "b", labels=["cat"]), ev(3, "c", labels=["cat"])]
    label = derive_label(1, events)
    assert label.labels == ("cat",)
    assert label.status == "labelled"
    # cat: 3/3 agree; dog: 2/3 agree (not chosen) -> mean 5/6
    assert abs(label.agreement - 5 / 6) < 1e-9


def test_tie_between_two_annotators_is_a_conflict_for_review():
    label = derive_label(1, [ev(1, "a", labels=["cat"]), ev(2, "b", labels=["dog"])])
    assert label.status == "conflict" and label.needs_review
    assert label.labels == ()  # neither label has a strict majority


def test_verdict_tie_is_a_conflict():
    label = derive_label(1, [ev(1, "a", verdict="match"), ev(2, "b", verdict="mismatch")])
    assert label.status == "conflict"


def test_adjudication_is_final_and_clears_review():
    events = [ev(1, "a", labels=["cat"]), ev(2, "b", labels=["dog"]), ev(3, "rev", kind="adjudicate", labels=["dog"])]
    label = derive_label(1, events)
    assert label.labels == ("dog",) and label.status == "adjudicated" and not label.needs_review


def test_undo_retracts_an_event_but_keeps_history():
    events = [ev(1, "a", labels=["cat"]), ev(2, "a", labels=["dog"]), ev(3, "a", kind="undo", labels=None, undoes=2)]
    assert derive_label(1, events).labels == ("cat",)


def test_flag_and_mismatch_need_review():
    assert derive_label(1, [ev(1, "a"), ev(2, "a", kind="flag", labels=None, verdict=None)]).needs_review
    assert derive_label(1, [ev(1, "a", verdict="mismatch")]).needs_review


def test_skip_does_not_label():
    assert derive_label(1, [ev(1, "a", kind="skip", labels=None, verdict=None)]).labels is None


def test_the_import_is_never_a_disagreeing_voter():
    imported = ev(1, "system", kind="import", labels=["cat"], verdict=None)
    alone = derive_label(1, [imported])
    assert alone.labels == ("cat",) and alone.status == "labelled" and alone.annotators == ("system",)
    label = derive_label(1, [imported, ev(2, "ann", labels=["dog"], verdict="match")])
    assert label.labels == ("dog",) and label.status == "labelled" and not label.needs_review
    assert label.annotators == ("ann",) and label.agreement is None
    undone = derive_label(1, [imported, ev(2, "ann", labels=["dog"]), ev(3, "ann", kind="undo", labels=None, undoes=2)])
    assert undone.labels == ("cat",)  # the person's answer retracted: the import's labels again


def test_a_verdict_only_answer_changes_the_verdict_and_leaves_the_labels():
    imported = ev(1, "system", kind="import", labels=["cat"], verdict=None)
    verified = derive_label(1, [imported, ev(2, "ann", labels=None, verdict="mismatch")])
    assert verified.labels == ("cat",) and verified.verdict == "mismatch" and verified.needs_review
    assert verified.status == "labelled" and verified.annotators == ("system", "ann")
    labelled = [ev(1, "ann", labels=["dog"], verdict="match"), ev(2, "bob", labels=["dog"], verdict="match")]
    later = derive_label(1, [*labelled, ev(3, "ann", labels=None, verdict="mismatch"),
                             ev(4, "bob", labels=None, verdict="mismatch")])
    assert later.labels == ("dog",) and later.agreement == 1.0 and later.verdict == "mismatch"
    bare = derive_label(1, [ev(1, "ann", labels=None, verdict="unsure")])
    assert bare.labels is None and bare.status == "unlabelled" and bare.verdict == "unsure"
    split = derive_label(1, [ev(1, "ann", labels=None, verdict="match"), ev(2, "bob", labels=None, verdict="mismatch")])
    assert split.status == "conflict" and split.labels is None
