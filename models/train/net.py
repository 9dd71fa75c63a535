"""YOLOX-Nano (width 0.25, depth 0.33) in PyTorch, loadable from the shared COCO ONNX export.

The export folds BatchNorm into the convolutions, so every conv here is a plain conv with a bias (a fixed
affine BatchNorm would fold back into it anyway). Module call order follows the official YOLOX code,
which is also the order of the export's Conv nodes: `load_onnx` pairs them up in that order and checks
every shape and group count, so a structural mistake fails loudly instead of loading garbage.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

STRIDES = (8, 16, 32)
PRIOR_PROB = 0.01  # the head's initial class probability (YOLOX's own choice)
# the decoupled head's modules; everything else (backbone and PAFPN) is the trunk
HEAD = ("stems", "cls_convs", "cls_preds", "reg_convs", "reg_preds", "obj_preds")


class Conv(nn.Module):
    """Conv + bias + SiLU (BaseConv with its BatchNorm folded in)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=True)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.conv(x))


class DWConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.dconv = Conv(cin, cin, k, stride, groups=cin)
        self.pconv = Conv(cin, cout, 1)

    def forward(self, x):
        return self.pconv(self.dconv(x))


class Bottleneck(nn.Module):
    def __init__(self, cin: int, cout: int, shortcut: bool):
        super().__init__()
        self.conv1 = Conv(cin, cout, 1)
        self.conv2 = DWConv(cout, cout, 3)
        self.use_add = shortcut and cin == cout

    def forward(self, x):
        y = self.conv2(self.conv1(x))
        return y + x if self.use_add else y


class CSPLayer(nn.Module):
    def __init__(self, cin: int, cout: int, n: int, shortcut: bool = True):
        super().__init__()
        hidden = cout // 2
        self.conv1 = Conv(cin, hidden, 1)
        self.conv2 = Conv(cin, hidden, 1)
        self.conv3 = Conv(2 * hidden, cout, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, hidden, shortcut) for _ in range(n)])

    def forward(self, x):
        x1, x2 = self.conv1(x), self.conv2(x)
        return self.conv3(torch.cat([self.m(x1), x2], 1))


class SPP(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        hidden = cin // 2
        self.conv1 = Conv(cin, hidden, 1)
        self.pools = nn.ModuleList(nn.MaxPool2d(k, 1, k // 2) for k in (5, 9, 13))
        self.conv2 = Conv(hidden * 4, cout, 1)

    def forward(self, x):
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [p(x) for p in self.pools], 1))


class Focus(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = Conv(cin * 4, cout, 3)

    def forward(self, x):
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


class YoloxNano(nn.Module):
    """Backbone + PAFPN + decoupled head. `forward` returns raw maps; `export_rows` the ONNX layout."""

    def __init__(self, num_classes: int):
        super().__init__()
        c = [16, 32, 64, 128, 256]  # base 64 x width 0.25, doubling per stage
        self.num_classes = num_classes
        self.stem = Focus(3, c[0])
        self.dark2 = nn.Sequential(DWConv(c[0], c[1], 3, 2), CSPLayer(c[1], c[1], 1))
        self.dark3 = nn.Sequential(DWConv(c[1], c[2], 3, 2), CSPLayer(c[2], c[2], 3))
        self.dark4 = nn.Sequential(DWConv(c[2], c[3], 3, 2), CSPLayer(c[3], c[3], 3))
        self.dark5 = nn.Sequential(DWConv(c[3], c[4], 3, 2), SPP(c[4], c[4]), CSPLayer(c[4], c[4], 1, False))
        self.lateral_conv0 = Conv(c[4], c[3], 1)
        self.C3_p4 = CSPLayer(2 * c[3], c[3], 1, False)
        self.reduce_conv1 = Conv(c[3], c[2], 1)
        self.C3_p3 = CSPLayer(2 * c[2], c[2], 1, False)
        self.bu_conv2 = DWConv(c[2], c[2], 3, 2)
        self.C3_n3 = CSPLayer(2 * c[2], c[3], 1, False)
        self.bu_conv1 = DWConv(c[3], c[3], 3, 2)
        self.C3_n4 = CSPLayer(2 * c[3], c[4], 1, False)
        hidden = 64
        self.stems = nn.ModuleList(Conv(ch, hidden, 1) for ch in (c[2], c[3], c[4]))
        self.cls_convs = nn.ModuleList(nn.Sequential(DWConv(hidden, hidden, 3), DWConv(hidden, hidden, 3))
                                       for _ in STRIDES)
        self.cls_preds = nn.ModuleList(nn.Conv2d(hidden, num_classes, 1) for _ in STRIDES)
        self.reg_convs = nn.ModuleList(nn.Sequential(DWConv(hidden, hidden, 3), DWConv(hidden, hidden, 3))
                                       for _ in STRIDES)
        self.reg_preds = nn.ModuleList(nn.Conv2d(hidden, 4, 1) for _ in STRIDES)
        self.obj_preds = nn.ModuleList(nn.Conv2d(hidden, 1, 1) for _ in STRIDES)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per stride, a [N, 4 + 1 + C, H/s, W/s] map of raw (pre-sigmoid) outputs."""
        x = self.dark2(self.stem(x))
        x2 = self.dark3(x)
        x1 = self.dark4(x2)
        x0 = self.dark5(x1)
        fpn_out0 = self.lateral_conv0(x0)
        f_out0 = self.C3_p4(torch.cat([self.upsample(fpn_out0), x1], 1))
        fpn_out1 = self.reduce_conv1(f_out0)
        pan_out2 = self.C3_p3(torch.cat([self.upsample(fpn_out1), x2], 1))
        pan_out1 = self.C3_n3(torch.cat([self.bu_conv2(pan_out2), fpn_out1], 1))
        pan_out0 = self.C3_n4(torch.cat([self.bu_conv1(pan_out1), fpn_out0], 1))
        outs = []
        for k, feat in enumerate((pan_out2, pan_out1, pan_out0)):
            feat = self.stems[k](feat)
            cls_out = self.cls_preds[k](self.cls_convs[k](feat))
            reg_feat = self.reg_convs[k](feat)
            outs.append(torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat), cls_out], 1))
        return outs

    def freeze_trunk(self) -> None:
        """Backbone and PAFPN keep their weights: only the head trains (on the COCO trunk's own features)."""
        for name, module in self.named_children():
            if name not in HEAD:
                module.requires_grad_(False)

    def export_rows(self, x: torch.Tensor) -> torch.Tensor:
        """[N, A, 5 + C] in the export's layout: raw box offsets, then objectness and classes as sigmoids."""
        rows = torch.cat([o.flatten(2) for o in self.forward(x)], 2).permute(0, 2, 1)
        return torch.cat([rows[..., :4], rows[..., 4:].sigmoid()], 2)


class Exported(nn.Module):
    """What goes into the ONNX file: the export layout only."""

    def __init__(self, net: YoloxNano):
        super().__init__()
        self.net = net

    def forward(self, images):
        return self.net.export_rows(images)


def _onnx_convs(path: Path) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """(weight, bias, group, stride) of every Conv node, in graph order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        convs.append((inits[node.input[1]], inits[node.input[2]], int(attrs.get("group", 1)),
                      int(attrs.get("strides", [1])[0])))
    return convs


def _call_order(net: YoloxNano) -> list[nn.Conv2d]:
    """The model's Conv2d modules in the order one forward pass calls them."""
    order: list[nn.Conv2d] = []
    hooks = [m.register_forward_pre_hook(lambda mod, _inp: order.append(mod))
             for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    return order


def load_onnx(net: YoloxNano, path: Path, keep_classes: bool) -> None:
    """Copy the COCO export's weights into `net`.

    keep_classes=False leaves the class predictors (whose shape differs for a new class set) at a fresh
    initialisation with YOLOX's prior bias; everything else, objectness and box regression included, is copied.
    """
    convs = _onnx_convs(path)
    order = _call_order(net)
    if len(convs) != len(order):
        raise ValueError(f"{path}: {len(convs)} convolutions, the model has {len(order)}")
    cls_preds = set(net.cls_preds)
    for i, (mod, (w, b, group, stride)) in enumerate(zip(order, convs)):
        if mod in cls_preds and not keep_classes:
            nn.init.normal_(mod.weight, std=0.01)
            nn.init.constant_(mod.bias, -float(np.log((1 - PRIOR_PROB) / PRIOR_PROB)))
            continue
        if tuple(mod.weight.shape) != w.shape or mod.groups != group or mod.stride[0] != stride:
            raise ValueError(f"{path}: conv #{i} is {w.shape} group {group} stride {stride}, the model has "
                             f"{tuple(mod.weight.shape)} group {mod.groups} stride {mod.stride[0]}")
        with torch.no_grad():
            mod.weight.copy_(torch.from_numpy(np.array(w)))
            mod.bias.copy_(torch.from_numpy(np.array(b)))
