"""A hub id that cannot load here fails at once with the specs that do (no ~50 s of hub retries)."""

from __future__ import annotations

import socket

import pytest

from selfensemble.engine import hub
from selfensemble.errors import SelfEnsembleError


@pytest.fixture
def no_transformers_load(monkeypatch):
    """Any attempt to reach transformers' loaders fails the test: the check must come first."""
    import transformers

    def refuse(*a, **k):
        pytest.fail("transformers was asked to load (it would retry the hub for ~50 s)")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)


def test_unreachable_hub_refuses_an_unknown_id_before_loading(monkeypatch, no_transformers_load):
    from selfensemble.engine.models import load_model, load_tokenizer

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.PROBE_SECONDS: False)
    for load in (load_model, load_tokenizer):
        with pytest.raises(SelfEnsembleError) as err:
            load("nobody/no-such-model")
        assert "cannot be reached" in str(err.value) and "random:<llama|" in str(err.value)
        assert "smollm2-135m" in str(err.value)


def test_offline_flag_refuses_without_probing(monkeypatch, no_transformers_load):
    from selfensemble.engine.models import load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=0: pytest.fail("probed although offline"))
    with pytest.raises(SelfEnsembleError, match="HF_HUB_OFFLINE is set"):
        load_model("nobody/no-such-model")


def test_specs_that_need_no_hub_are_not_checked(tmp_path):
    assert not hub.is_hub_id("smollm2-135m") and not hub.is_hub_id("random:llama")
    assert not hub.is_hub_id(str(tmp_path)) and not hub.is_hub_id("./model") and not hub.is_hub_id("x.gguf")
    assert hub.is_hub_id("HuggingFaceTB/SmolLM2-135M")


def test_reachable_probe_on_a_local_endpoint(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert hub.hub_reachable(timeout=2)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert not hub.hub_reachable(timeout=2)
