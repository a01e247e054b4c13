"""Tests for pretrained weights in create_model (condensation.models.pretrained). Never touch the network."""

from __future__ import annotations

import socket
from pathlib import Path

import huggingface_hub
import pytest
import timm
import timm.models._builder as timm_builder
import torch
from safetensors.torch import save_file

from hmdc_modules.condensation.models import (
    ConvNet,
    PretrainedWeightsUnavailable,
    check_pretrained_available,
    create_model,
    head_parameter_names,
    read_weights_info,
    reset_head,
    save_weights_file,
)
from hmdc_modules.condensation.models import pretrained as pretrained_module


class _Network:
    """Records every attempt to reach the network; tests assert there was none (or only the cheap probe)."""

    def __init__(self) -> None:
        self.probes: list[tuple] = []
        self.downloads: list[str] = []


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> _Network:
    """No network: empty caches, the probe and every download entry point timm uses replaced by recorders."""
    record = _Network()

    def probe(address, timeout=None, *args, **kwargs):
        record.probes.append(address)
        raise OSError("network disabled in tests")

    def download(*args, **kwargs):
        record.downloads.append(repr(args))
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(socket, "create_connection", probe)
    for name in ("load_state_dict_from_hf", "load_state_dict_from_url", "download_cached_file", "load_custom_from_hf"):
        if hasattr(timm_builder, name):
            monkeypatch.setattr(timm_builder, name, download)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    torch_hub = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    yield record
    torch.hub.set_dir(torch_hub)


def _assert_one_line_error(error: PretrainedWeightsUnavailable, tag: str) -> str:
    message = str(error)
    assert "\n" not in message
    assert repr(tag) in message
    assert "weights=FILE" in message and "--weights-b FILE" in message
    return message


def test_offline_hub_request_fails_at_once_without_network(network: _Network, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsUnavailable) as caught:
        create_model("test_vit", 10, image_size=32, patch_size=4, pretrained=True)
    message = _assert_one_line_error(caught.value, "test_vit.r160_in1k")
    assert "HF_HUB_OFFLINE is set" in message
    assert network.probes == [] and network.downloads == []
    assert isinstance(caught.value, RuntimeError)


def test_unreachable_hub_is_detected_by_one_probe_and_nothing_is_downloaded(
    network: _Network, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    with pytest.raises(PretrainedWeightsUnavailable) as caught:
        create_model("vit_tiny_patch16_224", 10, pretrained="augreg_in21k_ft_in1k")
    message = _assert_one_line_error(caught.value, "vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert "huggingface.co cannot be reached" in message
    assert network.probes == [("huggingface.co", 443)]
    assert network.downloads == []


def test_a_failed_download_becomes_the_one_line_error(network: _Network, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    class _Connection:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: _Connection())

    def failing_download(*args, **kwargs):
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(timm_builder, "load_state_dict_from_hf", failing_download)
    with pytest.raises(PretrainedWeightsUnavailable) as caught:
        create_model("test_resnet", 10, pretrained=True)
    message = _assert_one_line_error(caught.value, "test_resnet.r160_in1k")
    assert "the download failed (ConnectionError: connection reset by peer)" in message


def _hub_cache_entry(root: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    """Lay out a Hugging Face hub cache entry holding ``state`` as model.safetensors (what a download leaves)."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0123456789abcdef")
    snapshot = folder / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def test_cached_hub_weights_load_through_timm_with_a_fresh_head(network: _Network, tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("test_resnet", pretrained=False)  # 1000 classes, like the hub's
    _hub_cache_entry(tmp_path / "hf-cache", "timm/test_resnet.r160_in1k", source.state_dict())
    model = create_model("test_resnet", 7, pretrained=True)
    assert network.probes == [] and network.downloads == []
    loaded, saved = model.state_dict(), source.state_dict()
    head = set(head_parameter_names(model))
    assert head == {"fc.weight", "fc.bias"}
    for name, tensor in loaded.items():
        if name not in head:
            torch.testing.assert_close(tensor, saved[name], msg=name)
    assert model.fc.weight.shape == (7, saved["fc.weight"].shape[1])


def test_library_weights_file_round_trip_backbone_equal_head_new(tmp_path: Path) -> None:
    torch.manual_seed(0)
    trained = create_model("test_vit", 3, image_size=16, patch_size=4)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)  # unlike any fresh initialisation
    path = save_weights_file(
        tmp_path / "weights.pt",
        trained,
        name="test_vit",
        num_classes=3,
        image_size=16,
        patch_size=4,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        classes=("a", "b", "c"),
        extra={"subset": "P"},
    )
    info = read_weights_info(path)
    assert info is not None and (info.model, info.image_size, info.patch_size) == ("test_vit", 16, 4)
    assert info.classes == ("a", "b", "c") and info.extra == {"subset": "P"}
    for num_classes in (3, 10):
        model = create_model("test_vit", num_classes, weights=path)  # image and patch size come from the file
        head = set(head_parameter_names(model))
        for name, tensor in model.state_dict().items():
            if name in head:
                continue
            torch.testing.assert_close(tensor, trained.state_dict()[name], msg=name)
        assert model.get_classifier().weight.shape[0] == num_classes
        if num_classes == 3:
            assert not torch.equal(model.get_classifier().weight, trained.get_classifier().weight)
        assert model(torch.zeros(1, 3, 16, 16)).shape == (1, num_classes)


def test_library_file_refuses_another_architecture_or_shape(tmp_path: Path) -> None:
    net = ConvNet(num_classes=4, width=128)
    path = save_weights_file(
        tmp_path / "w.pt", net, name="convnet", num_classes=4, image_size=32, patch_size=None, mean=(0,), std=(1,)
    )
    with pytest.raises(ValueError, match=r"holds weights of 'convnet', not of 'test_vit'"):
        create_model("test_vit", 10, weights=path)
    model = create_model("convnet", 10, weights=path)
    torch.testing.assert_close(model.features[0].conv.weight, net.features[0].conv.weight)
    vit = create_model("test_vit", 3, image_size=16, patch_size=4)
    vit_path = save_weights_file(
        tmp_path / "v.pt", vit, name="test_vit", num_classes=3, image_size=16, patch_size=4, mean=(0,), std=(1,)
    )
    with pytest.raises(ValueError, match=r"does not fit the model's backbone.*wrong shape"):
        create_model("test_vit", 3, weights=vit_path, patch_size=8)


def test_timm_format_file_goes_through_timms_loader(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = timm.create_model("test_vit", pretrained=False)  # 160x160, patch 16, 1000 classes
    file = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(file))
    model = create_model("test_vit", 10, weights=file)  # native size: every backbone tensor loads as is
    for name, tensor in model.state_dict().items():
        if not name.startswith("head."):
            torch.testing.assert_close(tensor, source.state_dict()[name], msg=name)
    assert model.head.weight.shape[0] == 10
    # At 32x32 with patch 4, timm's filter adapts the position embedding and the patch projection.
    small = create_model("test_vit", 10, image_size=32, patch_size=4, weights=file)
    assert small(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    torch.testing.assert_close(small.blocks[0].attn.qkv.weight, source.blocks[0].attn.qkv.weight)


def test_plain_convnet_state_dict_still_loads(tmp_path: Path) -> None:
    net = ConvNet(num_classes=10)
    torch.save(net.state_dict(), tmp_path / "convnet.pt")
    model = create_model("convnet", 10, weights=tmp_path / "convnet.pt")
    torch.testing.assert_close(model.features[2].conv.weight, net.features[2].conv.weight)
    assert read_weights_info(tmp_path / "convnet.pt") is None


def test_reset_head_keeps_the_parameter_objects() -> None:
    model = create_model("test_resnet", 5)
    weight = model.fc.weight
    before = weight.detach().clone()
    backbone = {n: t.clone() for n, t in model.state_dict().items() if not n.startswith("fc.")}
    assert reset_head(model) == ["fc.weight", "fc.bias"]
    assert model.fc.weight is weight and not torch.equal(weight, before)
    for name, tensor in backbone.items():
        assert torch.equal(model.state_dict()[name], tensor), name


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pretrained": True, "weights": "w.pt"}, ValueError, "`pretrained` and `weights` are exclusive"),
        ({"pretrained": 3}, TypeError, "`pretrained` must be True, a timm tag string or None, got int 3"),
        ({"pretrained": "no_such_tag"}, ValueError, "timm has no pretrained weights 'test_vit.no_such_tag'"),
        ({"pretrained": "resnet18.a1_in1k"}, ValueError, "names architecture 'resnet18'"),
        ({"weights": 5}, TypeError, "`weights` must be a path"),
        ({"weights": "missing.pt"}, FileNotFoundError, "no weights file at 'missing.pt'"),
        ({"image_size": 0}, ValueError, "`image_size` must be >= 1 or None, got 0"),
        ({"patch_size": "4"}, TypeError, "`patch_size` must be an int or None"),
    ],
)
def test_bad_arguments(kwargs: dict, error: type[Exception], match: str, network: _Network) -> None:
    with pytest.raises(error, match=match):
        create_model("test_vit", 10, **kwargs)
    assert network.downloads == []


def test_convnet_has_no_hub_weights(network: _Network) -> None:
    with pytest.raises(ValueError, match="the ConvNet has no hub weights"):
        create_model("convnet", pretrained=True)


def test_unavailable_message_is_trimmed_to_one_line() -> None:
    error = pretrained_module.unavailable("x.y", "line one\nline two " + "z" * 400)
    assert "\n" not in str(error) and "..." in str(error)


def test_availability_check_before_building(network: _Network, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PretrainedWeightsUnavailable, match=r"'test_resnet\.r160_in1k' are unavailable"):
        check_pretrained_available("test_resnet", True)
    file = _hub_cache_entry(tmp_path / "hf-cache", "timm/test_resnet.r160_in1k", {"x": torch.zeros(1)})
    assert check_pretrained_available("test_resnet", "r160_in1k") == str(file)
    assert network.probes == [] and network.downloads == []
