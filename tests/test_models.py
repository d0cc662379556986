"""Every CAM family in the registry gets the same checks, on tiny models and 64 px images."""

from __future__ import annotations

import pytest
import torch

from bao.config import ModelConfig
from bao.models import CAM_FAMILIES, backbone_family, create_bao_net, create_cam_net
from bao.models.attention import attention_refine
from bao.train.common import load_model_state, save_model

TINY = {"cnn": "test_resnet", "vit": "test_vit", "conformer": "conformer_test"}
NUM_CLASSES = 3
CASES = [(family, refine) for family in TINY for refine in ("none", "attention") if not (family == "cnn" and refine == "attention")]


def config(family: str, refine: str = "none", **extra) -> ModelConfig:
    return ModelConfig(backbone=TINY[family], pretrained=False, output_stride=16, refine=refine, **extra)


def inputs(size=(64, 64)) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.randn(2, 3, *size), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def test_every_registered_family_has_a_tiny_test_model():
    assert set(TINY) == set(CAM_FAMILIES)
    assert {family: backbone_family(name) for family, name in TINY.items()} == {family: family for family in TINY}


def test_unknown_backbone_is_named():
    with pytest.raises(ValueError, match="not_a_model"):
        backbone_family("not_a_model")


@pytest.mark.parametrize("family,refine", CASES)
def test_bao_net_shapes_and_gradients(family, refine):
    torch.manual_seed(0)
    net = create_bao_net(config(family, refine), NUM_CLASSES)
    images, labels = inputs()
    outputs = net(images, labels, refine=True)
    height, width = outputs["features"].shape[-2:]
    assert outputs["cams"].shape == (2, NUM_CLASSES, height, width)
    assert outputs["am"].shape == (2, NUM_CLASSES + 1, height, width)
    assert outputs["logits"].shape == (2, NUM_CLASSES)
    assert ("attention" in outputs) == (refine == "attention")
    (outputs["am"].mean() + outputs["logits"].sum()).backward()
    assert net.am_head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.cam_net.backbone.parameters() if p.requires_grad and p.dim() > 1)


@pytest.mark.parametrize("family", ["vit", "conformer"])
def test_refinement_is_the_attention_product_and_logits_stay_unrefined(family):
    net = create_bao_net(config(family, "attention"), NUM_CLASSES).eval()
    images, labels = inputs()
    with torch.no_grad():
        plain = net(images, labels)
        refined = net(images, labels, refine=True)
    assert "attention" not in plain
    attention = refined["attention"]
    tokens = plain["cams"].shape[-2] * plain["cams"].shape[-1]
    assert attention.shape == (2, tokens, tokens)
    assert (attention >= 0).all()
    # head-averaged softmax rows sum to 1 per layer; dropping prefix tokens can only lower that
    assert (attention.sum(-1) <= len(net.cam_net.backbone.recorder.modules) + 1e-4).all()
    assert torch.allclose(refined["cams"], attention_refine(attention, plain["cams"]), atol=1e-5)
    assert torch.allclose(refined["am"], attention_refine(attention, plain["am"]), atol=1e-5)
    assert torch.allclose(refined["logits"], plain["logits"], atol=1e-6)
    assert not torch.allclose(refined["cams"], plain["cams"])


def test_attention_refine_is_a_matrix_product_per_channel():
    attention = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])  # (1, 2, 2): 2 tokens of a 1x2 grid
    maps = torch.tensor([[[[2.0, 4.0]], [[1.0, 0.0]]]])  # (1, 2 channels, 1, 2)
    refined = attention_refine(attention, maps)
    assert refined.tolist() == [[[[4.0, 3.0]], [[0.0, 0.5]]]]
    with pytest.raises(ValueError, match="does not fit"):
        attention_refine(torch.ones(1, 3, 3), maps)


def test_vit_attention_matches_timm_unfused_softmax_and_leaves_no_hooks():
    net = create_cam_net(config("vit", "attention"), NUM_CLASSES).eval()
    body = net.backbone.body
    captured = []
    handles = []
    for block in body.blocks:
        block.attn.fused_attn = False  # timm's reference path materialises the softmax
        handles.append(block.attn.attn_drop.register_forward_hook(lambda module, args, out: captured.append(out.mean(1))))
    images, _ = inputs()
    with torch.no_grad():
        recorded = net(images, refine=True)["attention"]
    for handle in handles:
        handle.remove()
    prefix = body.num_prefix_tokens
    reference = sum(layer[:, prefix:, prefix:] for layer in captured)
    assert len(captured) == len(body.blocks)
    assert torch.allclose(recorded, reference, atol=1e-5)
    assert all(not block.attn._forward_pre_hooks for block in body.blocks)


def test_vit_takes_any_input_size():
    net = create_cam_net(config("vit", "attention"), NUM_CLASSES).eval()
    images, _ = inputs(size=(72, 40))  # not multiples of the 16 px patch: padded, grid 5 x 3
    with torch.no_grad():
        outputs = net(images, refine=True)
    assert outputs["cams"].shape == (2, NUM_CLASSES, 5, 3)
    assert outputs["attention"].shape == (2, 15, 15)


def test_conformer_rejects_sizes_off_its_grid():
    net = create_cam_net(config("conformer"), NUM_CLASSES)
    with pytest.raises(ValueError, match="multiple of 16"):
        net(torch.randn(1, 3, 72, 72))


def test_cnn_cannot_refine_with_attention():
    with pytest.raises(ValueError, match="refine: attention needs a backbone with attention"):
        create_cam_net(config("cnn", "attention"), NUM_CLASSES)


@pytest.mark.parametrize("family", list(TINY))
def test_saved_model_reloads_to_identical_outputs(family, tmp_path):
    torch.manual_seed(1)
    net = create_bao_net(config(family), NUM_CLASSES).eval()
    save_model(tmp_path / "bao.pt", net, {"classes": ["a", "b", "c"]})
    torch.manual_seed(2)
    fresh = create_bao_net(config(family), NUM_CLASSES).eval()
    load_model_state(tmp_path / "bao.pt", fresh)
    images, labels = inputs()
    with torch.no_grad():
        assert torch.equal(net(images, labels)["am"], fresh(images, labels)["am"])


def test_a_model_about_to_load_trained_weights_reads_no_initial_ones():
    cfg = ModelConfig(backbone="resnet18", pretrained=True, checkpoint="weights.pth", output_stride=8, refine="none")
    bare = cfg.without_initial_weights()
    assert (bare.pretrained, bare.checkpoint) == (False, None)
    assert bare.model_dump(exclude={"pretrained", "checkpoint"}) == cfg.model_dump(exclude={"pretrained", "checkpoint"})
