"""Cycles as data: exact step sequences, rules, overrides, cost, validation.

See docs/math.md, 'Training cycles'.
"""

import pytest

from mgtoolkit.cycles import (
    CYCLE_NAMES,
    EarlyStopping,
    FixedEpochs,
    Schedule,
    Step,
    schedule,
)

# Hand-expanded from the recursions of docs/math.md, 'Training cycles', with consecutive
# repeats merged;
# the L = 4 rows are the design's own examples.
EXPECTED = {
    ("V", 2): "121",
    ("V", 3): "12321",
    ("V", 4): "1234321",
    ("W", 2): "121",
    ("W", 3): "1232321",
    ("W", 4): "123434323434321",
    ("F", 2): "121",
    ("F", 3): "1232321",
    ("F", 4): "1234343234321",
    ("half-V", 2): "21",
    ("half-V", 3): "321",
    ("half-V", 4): "4321",
    ("base", 2): "1",
    ("base", 3): "1",
    ("base", 4): "1",
}


@pytest.mark.parametrize(("name", "levels"), sorted(EXPECTED))
def test_named_cycle_sequences_are_exact(name, levels):
    s = schedule(name, levels)
    assert "".join(map(str, s.levels)) == EXPECTED[name, levels]
    assert s.name == name


@pytest.mark.parametrize("name", CYCLE_NAMES)
def test_rule_assignment_fixed_before_coarser_else_early(name):
    s = schedule(name, 4, epochs=3, patience=2, min_rel_improvement=0.01, max_epochs=9)
    for i, step in enumerate(s.steps):
        coarser_next = i + 1 < len(s.steps) and s.steps[i + 1].level > step.level
        if coarser_next:
            assert step.rule == FixedEpochs(3)
        else:
            assert step.rule == EarlyStopping(2, 0.01, 9)
    # The last step always finishes on the finest level under early stopping.
    assert s.steps[-1] == Step(1, EarlyStopping(2, 0.01, 9))


def test_name_aliases():
    assert schedule("halfv", 3).levels == schedule("half_V", 3).levels == (3, 2, 1)
    assert schedule("v", 3).name == "V"


def test_per_step_overrides_and_with_rule():
    s = schedule("V", 3, overrides={0: FixedEpochs(7), -1: EarlyStopping(3, 0.0, 11)})
    assert s.steps[0].rule == FixedEpochs(7)
    assert s.steps[-1].rule == EarlyStopping(3, 0.0, 11)
    assert s.steps[1].rule == FixedEpochs(5)  # untouched default
    t = s.with_rule(2, FixedEpochs(1))
    assert t.steps[2].rule == FixedEpochs(1)
    assert s.steps[2].rule != FixedEpochs(1)  # frozen: the original is unchanged
    with pytest.raises(ValueError, match="out of range"):
        s.with_rule(5, FixedEpochs(1))


def test_custom_sequence_is_taken_as_written():
    s = Schedule.from_levels([3, 3, 1, 2], epochs=2, max_epochs=4)
    assert s.levels == (3, 3, 1, 2)
    assert [type(st.rule) for st in s.steps] == [
        EarlyStopping,
        EarlyStopping,
        FixedEpochs,
        EarlyStopping,
    ]
    assert s.name == "custom"


def test_cost_in_finest_level_epochs():
    s = Schedule.from_levels([3, 2, 1], epochs=4, max_epochs=10)
    # every step is early stopping, counted at its cap of 10 epochs
    assert s.cost(2) == pytest.approx(10 * (1 / 16 + 1 / 4 + 1))
    assert s.cost(3) == pytest.approx(10 * (1 / 64 + 1 / 8 + 1))
    v = schedule("V", 2, epochs=4, max_epochs=10)  # 1 (fixed 4), 2 (cap 10), 1 (cap 10)
    assert v.cost_by_level(2) == pytest.approx({1: 14.0, 2: 2.5})
    text = str(v)
    assert "levels 1 2 1" in text and "epoch cap" in text


def test_early_stopping_rule_semantics():
    rule = EarlyStopping(patience=2, min_rel_improvement=0.1, max_epochs=100)
    assert not rule.done([10.0])
    assert not rule.done([10.0, 8.0])  # 20 % better: improvement
    assert not rule.done([10.0, 8.0, 7.5])  # 6 % < 10 %: one epoch without improvement
    assert rule.done([10.0, 8.0, 7.5, 7.4])  # two: stop
    assert EarlyStopping(5, 0.0, 3).done([3.0, 2.0, 1.0])  # cap
    assert FixedEpochs(2).done([1.0, 1.0]) and not FixedEpochs(2).done([1.0])
    assert FixedEpochs(0).done([])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: schedule("X", 3), "unknown cycle 'X'"),
        (lambda: schedule("V", 0), "levels must be an integer ≥ 1"),
        (lambda: schedule("V", 2.5), "levels must be an integer"),
        (lambda: schedule("V", 3, patience=0), "patience must be an integer ≥ 1"),
        (lambda: schedule("V", 3, max_epochs=0), "max_epochs must be an integer ≥ 1"),
        (lambda: schedule("V", 3, epochs=-1), "epochs must be an integer ≥ 0"),
        (lambda: schedule("V", 3, min_rel_improvement=-0.1), "min_rel_improvement"),
        (lambda: Schedule.from_levels([]), "at least one level"),
        (lambda: Schedule.from_levels([2, 0]), "level 1 is the finest"),
        (lambda: Step(1, "ten epochs"), "FixedEpochs or EarlyStopping"),
    ],
)
def test_bad_input_is_rejected_clearly(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_levels_beyond_what_is_available():
    s = schedule("half-V", 4)
    s.check_levels(4)
    with pytest.raises(ValueError, match=r"uses level 4 but only levels 1\.\.3"):
        s.check_levels(3)


def test_coarse_rule_applies_to_early_stopping_steps_on_coarse_levels_only():
    coarse = EarlyStopping(patience=1, min_rel_improvement=0.05, max_epochs=4)
    fine = EarlyStopping(7, 1e-3, 90)
    s = schedule("W", 3, epochs=2, patience=7, max_epochs=90, coarse=coarse)
    for i, step in enumerate(s.steps):
        if i + 1 < len(s.steps) and s.steps[i + 1].level > step.level:
            assert step.rule == FixedEpochs(2)  # restriction steps keep their fixed epochs
        else:
            assert step.rule == (fine if step.level == 1 else coarse)
    assert schedule("base", 3, patience=7, max_epochs=90, coarse=coarse).steps[0].rule == fine
    assert Schedule.from_levels([2, 2, 1], coarse=coarse).levels == (2, 2, 1)
    assert [st.rule for st in Schedule.from_levels([2, 2, 1], coarse=coarse).steps][:2] == [
        coarse,
        coarse,
    ]
    # W(3) = 1 2 3 2 3 2 1: level 3 twice capped at 4 epochs (1/16 of a level-1 epoch each in
    # 2D), level 2 two fixed steps and one capped at 4, instead of the finest level's cap of 90
    assert s.levels == (1, 2, 3, 2, 3, 2, 1)
    assert s.cost_by_level(2) == pytest.approx({1: 92.0, 2: (2 + 2 + 4) / 4, 3: 8 / 16})
    with pytest.raises(ValueError, match="coarse must be an EarlyStopping"):
        schedule("V", 3, coarse=FixedEpochs(3))
