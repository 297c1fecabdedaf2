"""Which config differences refuse a resume, and how they are named (nested sections by path)."""

from __future__ import annotations

from selfensemble.store.resume import config_differences


def test_nested_sections_differ_by_path():
    stored = {"method": "flex", "engine": {"positions": "right", "batch_size": 8}, "load": {"model": "m"}}
    given = {"method": "flex", "engine": {"positions": "restart", "batch_size": 8}, "load": {"model": "m"}}
    assert config_differences(stored, given) == {"engine.positions": ("right", "restart")}


def test_a_volatile_key_inside_a_section_is_skipped_by_its_path():
    stored = {"engine": {"batch_size": 8, "layout": "shared"}, "limit": 3}
    assert config_differences(stored, {"engine": {"batch_size": 2, "layout": "shared"}, "limit": 9}) == {}
    assert config_differences({"load": {"batch_size": 8}}, {"load": {"batch_size": 2}}) == {
        "load.batch_size": (8, 2)}  # only engine.batch_size is volatile, not any key of that name


def test_a_key_missing_on_one_side_differs():
    assert config_differences({"engine": {"a": 1}}, {"engine": {}}) == {"engine.a": (1, "<absent>")}
    assert config_differences({"gate": None}, {"gate": {"enabled": None}}) == {"gate": (None, {"enabled": None})}
    assert config_differences({"dataset_options": {}}, {"dataset_options": {"x": 1}}) == {
        "dataset_options.x": ("<absent>", 1)}


def test_only_a_data_location_that_changed_value_is_a_move():
    """A path that moved is a move; one that appears or disappears changes what is read, as does any other key."""
    from selfensemble.store.resume import config_differences, split_moves

    stored = {"data_path": "/a/x.jsonl", "dataset_options": {"train_path": "/a/t.jsonl"}, "split": "test"}
    given = {"data_path": "/b/x.jsonl", "dataset_options": {"train_path": "/b/t.jsonl"}, "split": "test"}
    refuse, moved = split_moves(config_differences(stored, given))
    assert refuse == {} and set(moved) == {"data_path", "dataset_options.train_path"}
    refuse, moved = split_moves(config_differences(stored, {**given, "dataset_options": {}, "split": "dev"}))
    assert set(refuse) == {"dataset_options.train_path", "split"} and set(moved) == {"data_path"}
    refuse, _ = split_moves(config_differences({**stored, "data_path": None}, given))
    assert set(refuse) == {"data_path"}
