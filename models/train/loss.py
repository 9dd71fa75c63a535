"""YOLOX's training loss with its SimOTA assignment (Ge et al. 2021, YOLOX), for one or more classes.

Per image: anchors whose centre lies in a ground-truth box or within CENTER_RADIUS strides of its centre
are candidates; each box takes its dynamic-k cheapest candidates (k = the sum of its 10 best IoUs), an
anchor claimed twice goes to the cheaper box. Losses: 5 x (1 - IoU^2) on the assigned boxes, BCE on
objectness everywhere, BCE on the class against the IoU for assigned anchors; all over the number of
assigned anchors (at least 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from models.train.net import STRIDES

CENTER_RADIUS = 2.5
TOPK_IOU = 10
REG_WEIGHT = 5.0


def grids(maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor, its (col, row) and stride, in the export's order."""
    cells, strides = [], []
    for m, s in zip(maps, STRIDES):
        h, w = m.shape[-2:]
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cells.append(torch.stack([xx.flatten(), yy.flatten()], 1))
        strides.append(torch.full((h * w,), float(s)))
    return torch.cat(cells).float(), torch.cat(strides)


def decode(rows: torch.Tensor, cell: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """[..., A, 4] raw offsets -> (cx, cy, w, h) in input pixels."""
    xy = (rows[..., :2] + cell) * stride[:, None]
    wh = torch.exp(rows[..., 2:4].clamp(max=10.0)) * stride[:, None]
    return torch.cat([xy, wh], -1)


def iou_cxcywh(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of [N, 4] and [M, 4] boxes -> [N, M]."""
    a1, a2 = a[:, None, :2] - a[:, None, 2:] / 2, a[:, None, :2] + a[:, None, 2:] / 2
    b1, b2 = b[None, :, :2] - b[None, :, 2:] / 2, b[None, :, :2] + b[None, :, 2:] / 2
    inter = (torch.min(a2, b2) - torch.max(a1, b1)).clamp(min=0).prod(-1)
    return inter / (a[:, None, 2:].prod(-1) + b[None, :, 2:].prod(-1) - inter + 1e-9)


def _assign(boxes: torch.Tensor, cls_ids: torch.Tensor, pred: torch.Tensor, obj: torch.Tensor,
            cls: torch.Tensor, cell: torch.Tensor, stride: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SimOTA for one image: (foreground mask [A], matched gt index per fg anchor, IoU per fg anchor)."""
    centre = (cell + 0.5) * stride[:, None]  # [A, 2]
    gx1y1, gx2y2 = boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2
    in_box = ((centre[None] > gx1y1[:, None]) & (centre[None] < gx2y2[:, None])).all(-1)  # [G, A]
    r = CENTER_RADIUS * stride[None, :, None]
    in_ctr = ((centre[None] - boxes[:, None, :2]).abs() < r).all(-1)
    cand = (in_box | in_ctr).any(0)
    if not cand.any():
        return cand, cand.new_zeros(0, dtype=torch.long), pred.new_zeros(0)
    both = (in_box & in_ctr)[:, cand]
    ious = iou_cxcywh(boxes, pred[cand])  # [G, C]
    p = (cls[cand][None, :, :].sigmoid() * obj[cand][None, :, None].sigmoid()).sqrt()  # [1, C, K]
    onehot = F.one_hot(cls_ids, cls.shape[1]).float()[:, None, :].expand(-1, p.shape[1], -1)
    cls_cost = F.binary_cross_entropy(p.expand(len(boxes), -1, -1).clamp(1e-6, 1 - 1e-6), onehot,
                                      reduction="none").sum(-1)
    cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + 1e5 * (~both).float()
    k = torch.topk(ious, min(TOPK_IOU, ious.shape[1]), 1).values.sum(1).int().clamp(min=1)
    match = torch.zeros_like(cost, dtype=torch.bool)
    for g in range(len(boxes)):
        match[g, torch.topk(cost[g], int(min(k[g], cost.shape[1])), largest=False).indices] = True
    multi = match.sum(0) > 1
    if multi.any():
        best = cost[:, multi].argmin(0)
        match[:, multi] = False
        match[best, multi.nonzero().squeeze(1)] = True
    fg_c = match.any(0)
    gt_idx = match[:, fg_c].float().argmax(0)
    fg = cand.clone()
    fg[cand] = fg_c
    return fg, gt_idx, ious[gt_idx, fg_c.nonzero().squeeze(1)]


def yolox_loss(maps: list[torch.Tensor], targets: list[torch.Tensor], class_ids: list[torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts for raw head maps and per-image xyxy targets (input pixels)."""
    rows = torch.cat([m.flatten(2) for m in maps], 2).permute(0, 2, 1)  # [B, A, 5 + C]
    cell, stride = grids(maps)
    pred = decode(rows, cell, stride)
    n_cls = rows.shape[-1] - 5
    obj_t = torch.zeros(rows.shape[:2])
    reg_losses, cls_losses, n_fg = [], [], 0
    for b, xyxy in enumerate(targets):
        if len(xyxy) == 0:
            continue
        boxes = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
        ids = class_ids[b] if class_ids is not None else torch.zeros(len(boxes), dtype=torch.long)
        with torch.no_grad():
            fg, gt_idx, fg_iou = _assign(boxes, ids, pred[b].detach(), rows[b, :, 4].detach(),
                                         rows[b, :, 5:].detach(), cell, stride)
        if not fg.any():
            continue
        obj_t[b, fg] = 1.0
        n_fg += int(fg.sum())
        iou = iou_cxcywh(pred[b, fg], boxes[gt_idx]).diagonal()
        reg_losses.append((1 - iou ** 2).sum())
        cls_t = F.one_hot(ids[gt_idx], n_cls).float() * fg_iou[:, None]
        cls_losses.append(F.binary_cross_entropy_with_logits(rows[b, fg, 5:], cls_t, reduction="sum"))
    norm = max(n_fg, 1)
    obj_loss = F.binary_cross_entropy_with_logits(rows[..., 4], obj_t, reduction="sum") / norm
    reg_loss = REG_WEIGHT * torch.stack(reg_losses).sum() / norm if reg_losses else rows.sum() * 0
    cls_loss = torch.stack(cls_losses).sum() / norm if cls_losses else rows.sum() * 0
    total = reg_loss + obj_loss + cls_loss
    return total, {"loss": float(total.detach()), "iou": float(reg_loss.detach()), "obj": float(obj_loss.detach()),
                   "cls": float(cls_loss.detach()),
                   "fg": n_fg}
