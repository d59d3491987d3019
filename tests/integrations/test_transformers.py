"""The Hugging Face ``Trainer`` with ``optimizer_cls_and_kwargs=(AdamMini, {...})``: it passes two
groups of bare tensors (decay, and no decay for norms); the optimizer binds itself to the model
at its first step. Compared with a plain loop over an explicitly bound optimizer.

A tiny Llama with a tied head: GPT-2's key bias has an exact gradient of 0, so its per-element
update is rounding noise (~lr) that any change of summation order moves; Llama has no such term."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from lightning_adam_mini import AdamMini

LR, WEIGHT_DECAY, STEPS, BATCH, T = 1e-2, 0.1, 3, 4, 8


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg)


class Counting(Dataset):
    def __init__(self, n: int = STEPS * BATCH):
        g = torch.Generator().manual_seed(1)
        self.seq = (torch.randint(0, 64, (n, 1), generator=g) + torch.arange(T)) % 64

    def __len__(self) -> int:
        return len(self.seq)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.seq[i], "labels": self.seq[i]}


def test_trainer_with_optimizer_cls_and_kwargs(tmp_path):
    model = tiny_llama()
    args = TrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        weight_decay=WEIGHT_DECAY,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Counting(),
        optimizer_cls_and_kwargs=(AdamMini, {"lr": LR}),
    )
    trainer.train()
    opt = trainer.optimizer.optimizer  # pyright: ignore[reportAttributeAccessIssue]  (accelerate's wrapper)
    assert isinstance(opt, AdamMini) and len(opt.param_groups) == 2
    assert [g["weight_decay"] for g in opt.param_groups] == [WEIGHT_DECAY, 0.0]

    reference = tiny_llama()
    explicit = AdamMini(
        reference, lr=LR, weight_decay=WEIGHT_DECAY, example_inputs=(torch.zeros(2, T, dtype=torch.long),)
    )
    data = Counting().seq
    for step in range(STEPS):
        x = data[step * BATCH : (step + 1) * BATCH]
        explicit.zero_grad()
        # the Trainer's loss: summed over the batch's predicted tokens, divided by their number
        reference(input_ids=x, labels=x, num_items_in_batch=torch.tensor(BATCH * (T - 1))).loss.backward()
        explicit.step()
    assert opt.plan == explicit.plan
    assert opt.plan["model.embed_tokens.weight"].role == "embedding"  # the tied head, named once
    init = tiny_llama()
    for (name, p), q, p0 in zip(model.named_parameters(), reference.parameters(), init.parameters()):
        assert not torch.equal(q, p0), f"{name} did not train"
        torch.testing.assert_close(p.detach(), q.detach(), rtol=0, atol=1e-6, msg=name)
