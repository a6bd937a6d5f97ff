"""Adapted: not a published recipe. The K710 ViT-g distilled into a ViT-B/16 student on K710,
as the reference made vit_b_k710_dl_from_giant (K710 81.5 top-1 at 16x5x3). Only "logit
distillation following Beyer et al. 2022" is published, so each number is an assumption whose
source is given:

- teacher: vit_g_hybrid_pt_1200e_k710_ft (K710 83.8), converted (docs/checkpoints.md), g/14 at
  224 with 2048 tokens; its forward runs in the student's step in bf16 (model.dtype).
- student: its own post-pre-trained K710 classifier (the reference: "each student starts from
  its own post-pre-trained K710 checkpoint"); init_from runs/b_k710 is a placeholder (the workdir of
  configs/finetune_b_k710.py).
- loss: KL(teacher || student) at T=1, no label loss (Beyer et al. 2022, "Knowledge
  distillation: a good teacher is patient and consistent"; config.distill.label_weight adds
  a label cross-entropy for other recipes).
- same crop and mixup for both (Beyer et al.'s "function matching"): the student's augmented,
  mixed clip is what the teacher sees; mixup 0.8 / cutmix 1.0 and RandAugment, random
  erasing, 2 repeated views as the reference's K710 fine-tuning (vit_b_k710_ft.sh).
- optimizer and batch: vit_b_k710_ft.sh (16 x 32 GPUs = 512, lr 7e-4 x 512/256, AdamW
  (0.9, 0.999), wd 0.05, ld 0.75, dp 0.1, warmup 5, min lr 1e-6): the reference's own K710
  recipe at this size.
- epochs 90: vit_b_k710_ft.sh's length. Beyer et al. find that distillation keeps improving
  with much longer ("patient") schedules; 90 is an assumed floor. Raise --config.epochs.

python -m vmae2_jax.main --config=configs/distill_b_k710.py --workdir=DIR --config.init_from=STUDENT --config.distill.teacher_from=TEACHER
"""

from configs._stages import distill_k710


def get_config(arg=None):
  return distill_k710("B/16")
