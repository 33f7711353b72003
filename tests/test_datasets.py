"""Tests of bayesirl.datasets: the panel loader (arrays and CSV, binning, gaps, bad columns) and
Rust's bus data (first stage, MDP, demonstrations, re-discretisation, groups, shipped files)."""

import importlib.resources

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax

import bayesirl as birl
from bayesirl.datasets import (
    load_panel,
    read_csv_columns,
    rust_bus,
    rust_bus_panel,
    rust_bus_transitions,
)
from bayesirl.datasets.rust import COST_SCALE, KEEP, REPLACE


def small_panel_columns():
    """Two ids, rows shuffled: id 7 visits 0 -> 1 -> 1 (periods 3-5), id 2 visits 2 -> 0
    (periods 0-1)."""
    return {"id": [7, 2, 7, 2, 7], "period": [5, 1, 3, 0, 4], "state": [1, 0, 0, 2, 1],
            "action": [0, 1, 1, 0, 0], "note": ["e", "b", "c", "a", "d"]}


def write_csv(path, columns):
    names = list(columns)
    lines = [",".join(names)]
    lines += [",".join(str(columns[k][i]) for k in names) for i in range(len(columns[names[0]]))]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------- load_panel
def test_rows_are_sorted_by_id_and_period_and_consecutive_periods_give_transitions():
    p = load_panel(small_panel_columns(), keep=("note",))
    assert p.id_labels == (2, 7)
    assert p.ids.tolist() == [0, 0, 1, 1, 1]
    assert p.periods.tolist() == [0, 1, 3, 4, 5]
    assert p.states.tolist() == [2, 0, 0, 1, 1]
    assert p.actions.tolist() == [0, 1, 1, 0, 0]
    assert p.next_states.tolist() == [0, -1, 1, 1, -1]
    assert p.extra["note"].tolist() == ["a", "b", "c", "d", "e"]
    s, a, s1 = p.transitions()
    assert (s.tolist(), a.tolist(), s1.tolist()) == ([2, 0, 1], [0, 1, 0], [0, 1, 1])
    assert len(p) == 5 and p.n_ids == 2 and p.n_trajectories == 2 and p.n_states == 3


def test_to_demonstrations_gives_one_padded_trajectory_per_id():
    d = load_panel(small_panel_columns()).to_demonstrations()
    assert isinstance(d, birl.Demonstrations)
    assert d.lengths.tolist() == [2, 3]
    assert d.states.tolist() == [[2, 0, 0], [0, 1, 1]]
    assert d.actions.tolist() == [[0, 1, 0], [1, 0, 0]]
    assert d.final_states is None


def test_a_csv_file_reads_like_the_same_columns_and_errors_name_its_line(tmp_path):
    cols = small_panel_columns()
    path = write_csv(tmp_path / "panel.csv", cols)
    a, b = load_panel(path, keep="note"), load_panel(cols, keep="note")
    for k in ("ids", "periods", "states", "actions", "next_states", "trajectories"):
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    cols["action"][3] = 0.5
    bad = write_csv(tmp_path / "bad.csv", cols)
    with pytest.raises(ValueError, match=r"action='action': row 3 \(line 5 of .*bad.csv'\) "
                                         r"is 0.5, expected an integer"):
        load_panel(bad)


def test_csv_errors_name_the_files_own_line_after_blank_lines_and_refuse_twin_columns(
        tmp_path):
    good = "id,period,state,action\n\n1,0,2,0\n\n1,1,x,0\n"  # the bad row is line 5
    (tmp_path / "blank.csv").write_text(good)
    with pytest.raises(ValueError, match=r"state='state': row 1 \(line 5 of .*blank.csv'\)"):
        load_panel(tmp_path / "blank.csv")
    (tmp_path / "fields.csv").write_text("id,period,state,action\n\n1,0,2,0\n1,1,0\n")
    with pytest.raises(ValueError, match=r"fields.csv' line 4 has 3 fields, expected 4"):
        read_csv_columns(tmp_path / "fields.csv")
    (tmp_path / "twins.csv").write_text("id,period,state,state,action\n1,0,1,5,0\n")
    with pytest.raises(ValueError, match=r"names the column\(s\) \['state'\] more than once"):
        read_csv_columns(tmp_path / "twins.csv")
    (tmp_path / "huge.csv").write_text("id,period,state,action\n1,0,99999999999999999999,0\n")
    assert read_csv_columns(tmp_path / "huge.csv")["state"].dtype == np.float64
    with pytest.raises(ValueError, match=r"state='state': row 0 \(line 2 of .*huge.csv'\) is "
                                         r"1e\+20, expected an integer \(within int64\)"):
        load_panel(tmp_path / "huge.csv")


def test_keep_and_edges_of_the_wrong_kind_are_named():
    cols = small_panel_columns()
    assert load_panel(cols, keep=None).extra == {}
    with pytest.raises(TypeError, match="keep must be a column name or a sequence"):
        load_panel(cols, keep=3)
    with pytest.raises(TypeError, match=r"edges must be numbers \(bin edges\), got \['a', 'b'\]"):
        load_panel(cols, edges=["a", "b"])


def test_string_and_composite_ids():
    cols = {"unit": ["b", "a", "b", "a"], "group": [1, 2, 1, 1], "period": [1, 0, 0, 0],
            "state": [0, 1, 2, 3], "action": [0, 0, 0, 0]}
    with pytest.raises(ValueError, match=r"id 'a' has two rows for period 0 \(row 1 and row 3\)"):
        load_panel(cols, id="unit")
    p = load_panel(cols, id=("group", "unit"))
    assert p.id_labels == ((1, "a"), (1, "b"), (2, "a"))
    assert p.states.tolist() == [3, 2, 0, 1]
    assert p.next_states.tolist() == [-1, 0, -1, -1]


def test_edges_bin_a_continuous_state_into_half_open_intervals():
    cols = {"id": [0] * 5, "period": range(5), "action": [0] * 5,
            "miles": [0.0, 4999.9, 5000.0, 12000.0, 14999.0]}
    p = load_panel(cols, state="miles", edges=[0, 5000, 10000, 15000])
    assert p.states.tolist() == [0, 0, 1, 2, 2]
    assert p.n_states == 3 and p.edges.tolist() == [0, 5000, 10000, 15000]
    assert load_panel(cols, state="miles", bin_width=5000).states.tolist() == [0, 0, 1, 2, 2]
    open_top = load_panel(cols, state="miles", edges=[0, 5000, np.inf])
    assert open_top.states.tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match=r"state='miles': row 3 is 12000.0, outside the bins "
                                         r"\[0, 10000\) of edges"):
        load_panel(cols, state="miles", edges=[0, 5000, 10000])
    with pytest.raises(ValueError, match="edges must be an increasing"):
        load_panel(cols, state="miles", edges=[0, 5000, 5000])
    with pytest.raises(ValueError, match="give edges or bin_width, not both"):
        load_panel(cols, state="miles", edges=[0, 1], bin_width=1)
    with pytest.raises(ValueError, match="bin_width is 0"):
        load_panel(cols, state="miles", bin_width=0)
    cols["miles"][1] = -1.0
    with pytest.raises(ValueError, match=r"row 1 is -1.0, expected a value >= 0"):
        load_panel(cols, state="miles", bin_width=5000)


def test_a_gap_in_the_periods_is_an_error_or_splits_the_trajectory():
    cols = {"id": [1, 1, 1, 1, 2], "period": [0, 1, 4, 5, 0], "state": [0, 1, 2, 3, 4],
            "action": [0, 0, 0, 0, 0]}
    with pytest.raises(ValueError, match=r"id 1: period 1 is followed by period 4 \(row 1 and "
                                         r"row 2\), a gap of 2; pass gaps='split'"):
        load_panel(cols)
    p = load_panel(cols, gaps="split")
    assert p.trajectories.tolist() == [0, 0, 1, 1, 2]
    assert p.next_states.tolist() == [1, -1, 3, -1, -1]  # nothing crosses the gap
    assert p.n_ids == 2 and p.n_trajectories == 3
    assert p.to_demonstrations().lengths.tolist() == [2, 2, 1]


def test_bad_columns_are_named():
    cols = small_panel_columns()
    with pytest.raises(ValueError, match=r"action='decision': the data has no column "
                                         r"'decision'; its columns are \['action', 'id', 'note', "
                                         r"'period', 'state'\]"):
        load_panel(cols, action="decision")
    with pytest.raises(ValueError, match="keep='usage': the data has no column 'usage'"):
        load_panel(cols, keep=("usage",))
    with pytest.raises(ValueError, match=r"state='state': row 2 is -1, expected an integer >= 0"):
        load_panel({**cols, "state": [1, 0, -1, 2, 1]})
    with pytest.raises(ValueError, match=r"period='period': row 0 is 'x', expected an integer"):
        load_panel({**cols, "period": ["x", 1, 3, 0, 4]})
    with pytest.raises(ValueError, match=r"state='state': row 1 is 0.5, expected an integer"):
        load_panel({**cols, "state": [1, 0.5, 0, 2, 1]})
    with pytest.raises(ValueError, match=r"id='id': column 'id' has 4 rows, expected 5"):
        load_panel({**cols, "id": [7, 2, 7, 2]})
    with pytest.raises(ValueError, match=r"id='id': row 1 is nan"):
        load_panel({**cols, "id": [7.0, np.nan, 7.0, 2.0, 7.0]})
    with pytest.raises(TypeError, match="data must be a CSV path or a mapping"):
        load_panel([[0, 1]])
    with pytest.raises(ValueError, match="gaps is 'skip'"):
        load_panel(cols, gaps="skip")


def test_a_pandas_dataframe_is_read_as_columns():
    pd = pytest.importorskip("pandas")
    p = load_panel(pd.DataFrame(small_panel_columns()))
    assert p.states.tolist() == [2, 0, 0, 1, 1]


# ---------------------------------------------------------------------- Rust's bus data
def test_rusts_first_stage_for_group_4_reproduces_table_ix():
    dyn = rust_bus_transitions(groups=(4,))
    assert dyn.counts.tolist() == [[1682.0, 2555.0, 55.0]]  # README: 1 682 / 2 555 / 55
    p = dyn.group_mode(torch.float64)[0]
    assert [round(float(x), 4) for x in p] == [0.3919, 0.5953, 0.0128]
    assert dyn.support.n_groups == 1 and dyn.support.n_states == 90


def test_the_transitions_first_stage_counts_the_panels_consecutive_months():
    panel = rust_bus_panel((4,))
    dyn = rust_bus_transitions((4,), first_stage="transitions")
    # oracle: walk each bus's months
    counts = np.zeros(3)
    s, a, nxt = panel.states.tolist(), panel.actions.tolist(), panel.next_states.tolist()
    for i in range(len(panel)):
        if nxt[i] >= 0:
            counts[nxt[i] - (0 if a[i] == REPLACE else s[i])] += 1
    assert dyn.counts[0].tolist() == counts.tolist()
    assert counts.sum() == 4292 - 37


def test_rust_bus_mdp_resets_on_replace_absorbs_at_the_top_and_rows_sum_to_one():
    mdp, _ = rust_bus()
    S = 90
    p = torch.tensor([1682, 2555, 55], dtype=torch.float64) / 4292
    assert (mdp.n_states, mdp.n_actions, mdp.discount, mdp.dtype) == (S, 2, 0.9999,
                                                                      torch.float64)
    P = mdp.transition_matrix()
    assert torch.allclose(P.sum(-1), torch.ones(S, 2, dtype=torch.float64))
    assert torch.allclose(P[:, REPLACE, :3], p.expand(S, 3))  # from any bin: to 0, 1, 2
    for x in (0, 40, 87):
        assert torch.allclose(P[x, KEEP, x:x + 3], p)
    assert torch.allclose(P[88, KEEP, 88:], torch.stack([p[0], p[1] + p[2]]))
    assert P[89, KEEP, 89] == 1  # the top bin absorbs
    assert mdp.action_names == ("keep", "replace") and mdp.state_names[-1] == "445000+"


def test_rust_bus_features_give_rusts_utilities_for_theta_11_and_rc():
    mdp, _ = rust_bus()
    assert mdp.feature_names == ("theta_11", "RC")
    theta = torch.tensor([2.2930, 10.0750], dtype=torch.float64)
    r = mdp.features @ theta
    x = torch.arange(90, dtype=torch.float64)
    assert torch.allclose(r[:, KEEP], -COST_SCALE * theta[0] * x)
    assert torch.allclose(r[:, REPLACE], torch.full((90,), -theta[1].item(),
                                                    dtype=torch.float64))
    assert (r <= 0).all()  # positive theta are costs


def choice_loglik(mdp, demos, theta):
    """Oracle: sum_t log pi(a_t | x_t) of the logit expert, the soft Bellman fixed point solved
    by Newton's method on ``V = logsumexp_a(r + beta P V)`` in dense NumPy."""
    P, beta = mdp.transition_matrix().numpy(), mdp.discount
    r = (mdp.features @ torch.as_tensor(theta, dtype=mdp.dtype)).numpy()
    S = mdp.n_states
    V = np.zeros(S)
    for _ in range(100):
        Q = r + beta * P @ V
        P_pi = np.einsum("sa,sat->st", softmax(Q, -1), P)
        V = V - np.linalg.solve(np.eye(S) - beta * P_pi, V - logsumexp(Q, -1))
    Q = r + beta * P @ V
    assert np.abs(V - logsumexp(Q, -1)).max() < 1e-9
    logp = Q - logsumexp(Q, -1, keepdims=True)
    s, a, m = demos.states.numpy(), demos.actions.numpy(), demos.mask.numpy()
    return float((logp[s, a] * m).sum())


@pytest.mark.parametrize("discount, theta, published", [
    (0.9999, (2.2930, 10.0750), -163.584),  # Rust (1987) Tables VIII/IX, group 4
    (0.0, (71.5133, 7.6358), -165.458),
])
def test_rust_bus_gives_rusts_choice_log_likelihood_at_his_estimates(discount, theta,
                                                                     published):
    mdp, demos = rust_bus(discount=discount)
    # published to 3 decimals
    assert abs(choice_loglik(mdp, demos, theta) - published) < 1e-3


def test_the_transitions_first_stage_gives_an_mdp_with_the_panels_frequencies():
    mdp, demos = rust_bus(first_stage="transitions")
    p = torch.tensor([1685, 2515, 55], dtype=torch.float64) / 4255
    assert torch.allclose(mdp.transition_matrix()[10, KEEP, 10:13], p)
    assert demos.n_steps == 4292


def test_rust_bus_demonstrations_are_one_per_bus_with_the_first_month_dropped():
    mdp, demos = rust_bus()
    assert demos.n == 37 and demos.n_steps == 4292 and (demos.lengths == 116).all()
    assert int(demos.actions.sum()) == 33  # replacements
    panel = rust_bus_panel()
    assert panel.periods.min() == 0 and panel.periods.max() == 115
    first = demos.states[:, 0]
    assert torch.allclose(mdp.initial, torch.bincount(first, minlength=90).double() / 37)


def test_coarser_bins_merge_the_shipped_5000_mile_bins():
    fine, coarse = rust_bus_panel(), rust_bus_panel(bin_size=15000)
    assert torch.equal(coarse.states, fine.states // 3)
    dyn = rust_bus_transitions(bins=30, bin_size=15000)
    assert dyn.n_observations == 4292 and dyn.support.n_slots == 2
    mdp, demos = rust_bus(bins=30, bin_size=15000)
    assert mdp.n_states == 30 and demos.n_steps == 4292
    with pytest.raises(ValueError, match=r"bin_size is 2571, expected a multiple of 5000: "
                                         r"the shipped data are in 5000-mile bins"):
        rust_bus(bin_size=2571)
    with pytest.raises(ValueError, match=r"bins is 60, but bus \(4, 8\) reaches bin 77 "
                                         r"\(385000\+ miles\) in period \d+, expected bins >= 78"):
        rust_bus(bins=60)


def test_groups_and_sources():
    mdp, demos = rust_bus(groups=(1, 2, 3, 4))
    assert demos.n == 104 and demos.n_steps == 8156  # Rust's Table IX, groups 1-4
    assert rust_bus_panel((1, 2, 3)).n_ids == 67 and len(rust_bus_panel((1, 2, 3))) == 3864
    econ = rust_bus_transitions((4,), source="econirl")
    assert econ.counts.tolist() == [[1710.0, 2527.0, 55.0]]
    assert [round(float(x), 4) for x in econ.group_mode(torch.float64)[0]] == [0.3984, 0.5888,
                                                                              0.0128]
    assert rust_bus_transitions(4).counts.tolist() == [[1682.0, 2555.0, 55.0]]
    with pytest.raises(ValueError, match=r"groups\[0\] is 5, expected an integer \[1, 4\]"):
        rust_bus(groups=(5,))
    with pytest.raises(ValueError, match="expected distinct groups"):
        rust_bus(groups=(4, 4))
    with pytest.raises(ValueError, match="source is 'ruspy'"):
        rust_bus(source="ruspy")
    with pytest.raises(ValueError, match="first_stage is 'mle'"):
        rust_bus(first_stage="mle")


def test_the_data_ship_inside_the_package_with_their_readme_and_licences():
    data = importlib.resources.files("bayesirl.datasets").joinpath("data")
    names = {p.name for p in data.iterdir()}
    assert {"README.md", "LICENSE-ruspy.txt", "LICENSE-econirl.txt", "rust1987_group4.csv",
            "rust1987_econirl.csv"} <= names
    readme = data.joinpath("README.md").read_text()
    assert "MIT" in readme and "Econometrica 55(5)" in readme
    assert birl.datasets.rust_bus is rust_bus
