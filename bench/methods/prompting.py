"""The learned-context prompt shared by the CoOp family (CoOp, CoCoOp, KgCoOp, MaPLe, PromptSRC).

Usage (a method in the family):
    >>> class MyPrompts(PromptLearning):
    ...     def setup(self):
    ...         self.ctx = nn.Parameter(self.init_context(None, "a photo of a", 0.02))   # (M, width)
    ...     # compute_text_features: the class prompts with self.ctx spliced in, through the text tower

Each class prompt is the tokenised string "<prefix text> <name>." — [SOS][v_1 … v_M][rest][name tokens][.][EOS] —
with the M learned vectors replacing positions 1..M. With init words the vectors start as the first M of those words'
token embeddings and the prefix text keeps all the words (MaPLe learns "a photo" and keeps the frozen "of a", as its
code does); with random init they start N(0, std²) and the prefix text is "X X … X". The frozen pieces around the
context (SOS, then the rest: words, name, ".", EOS) are buffers rebuilt for every class list.
"""

from __future__ import annotations

import torch

from bench.backbone import encode_text_embeddings, token_embeddings
from bench.errors import BenchError
from bench.methods.base import Method


class PromptLearning(Method):
    """A frozen CLIP read through learned context vectors in front of each class name."""

    n_ctx: int = 0
    prefix_text: str = ""

    def init_context(self, n_ctx: int | None, ctx_init: str, init_std: float, leading: tuple = ()) -> torch.Tensor:
        """Initial context (*leading, M, width); sets `n_ctx` and `prefix_text`.

        ctx_init words: M = n_ctx when given and at most the words' token count (MaPLe, PromptSRC), else that count
        (CoOp, CoCoOp, KgCoOp pass None); the vectors are the words' first M token embeddings. No words: M = n_ctx,
        drawn N(0, init_std²) with shape (*leading, M, width) (CoOp's class-specific context: leading = (C,)).
        """
        width = self.clip.token_embedding.weight.shape[1]
        words = ctx_init.replace("_", " ").strip()
        if words:
            tokens = self.backbone.tokenize([words])
            n_words = int((tokens[0] > 0).sum()) - 2                                 # minus SOS and EOS
            if n_ctx is None or n_ctx <= n_words:
                self.n_ctx, self.prefix_text = n_ctx or n_words, words
                with torch.no_grad():
                    emb = token_embeddings(self.clip, self.tokens_on_device(tokens))[0, 1:1 + self.n_ctx]
                return emb.clone()                                                  # (M, width)
        if not n_ctx:
            raise BenchError(f"{self.name}: give n_ctx (random context) or ctx_init words")
        self.n_ctx, self.prefix_text = n_ctx, " ".join(["X"] * n_ctx)
        return torch.empty(*leading, n_ctx, width).normal_(0, init_std)

    def set_classnames(self, classnames: list[str], template: str | None = None) -> None:
        """Tokenise "<prefix text> <name>." per class and keep the frozen embeddings around the context."""
        self.classnames = list(classnames)
        if template is not None:
            self.template = template                      # the hand-crafted template (KgCoOp's target features)
        names = [c.replace("_", " ") for c in classnames]
        self.set_class_tokens(self.tokenize([f"{self.prefix_text} {n}." for n in names]))            # (C, L)
        self.name_lens = [int((t > 0).sum()) - 2 for t in self.backbone.tokenize(names)]
        n_prefix = int((self.backbone.tokenize([self.prefix_text])[0] > 0).sum()) - 2
        for n, k, row in zip(names, self.name_lens, self.class_tokens):
            if int((row > 0).sum()) < n_prefix + k + 3:                   # SOS + prefix + name + "." + EOS
                raise BenchError(f"{self.name}: the prompt for class {n!r} ({self.n_ctx} context tokens) does not "
                                 f"fit the text tower's context of {self.clip.positional_embedding.shape[0]} tokens")
        with torch.no_grad():
            emb = token_embeddings(self.clip, self.tokens_on_device(self.class_tokens))            # (C, L, width)
        self.register_buffer("token_prefix", emb[:, :1].clone(), persistent=False)                # SOS
        self.register_buffer("token_suffix", emb[:, 1 + self.n_ctx:].clone(), persistent=False)   # rest . EOS pad
        self._text_cache = None

    def assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """Class prompts with the context in positions 1..M: ctx (M, w) shared, (C, M, w) per class or (B, 1, M, w)
        per image (CoCoOp) → (…, C, L, w)."""
        prefix, suffix = self.token_prefix, self.token_suffix                      # (C, 1, w), (C, L − 1 − M, w)
        lead = torch.broadcast_shapes(ctx.shape[:-2], prefix.shape[:-2])

        def grow(t: torch.Tensor) -> torch.Tensor:
            return t.expand(*lead, *t.shape[-2:])

        return torch.cat([grow(prefix), grow(ctx.to(prefix.dtype)), grow(suffix)], dim=-2)

    def encode_prompts(self, prompts: torch.Tensor, hook=None) -> torch.Tensor:
        """(C, L, w) prompt embeddings (or (B, C, L, w)) → (C, D) (or (B, C, D)) un-normalised text features."""
        tokens = self.tokens_on_device(self.class_tokens)
        if prompts.dim() == 3:
            return encode_text_embeddings(self.clip, prompts, tokens, hook)
        b, c = prompts.shape[:2]
        flat = encode_text_embeddings(self.clip, prompts.flatten(0, 1), tokens.repeat(b, 1), hook)
        return flat.view(b, c, -1)

    def compute_text_features(self) -> torch.Tensor:
        return self.encode_prompts(self.assemble(self.ctx))
