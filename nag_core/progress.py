"""Progress of a chain on stderr: one tqdm bar over the chain's steps, one over each step's Euler
steps (the second is what a :class:`FoleySession` reports to)."""

from __future__ import annotations


class ChainProgress:
    def __init__(self, total_steps: int, enabled: bool):
        from tqdm import tqdm
        self.tqdm, self.enabled = tqdm, enabled
        self.chain = tqdm(total=total_steps, desc="chain", unit="step", disable=not enabled,
                          position=0)
        self.inner = None

    def start_step(self, k: int, prompt: str) -> None:
        self.close_inner()
        self.inner = self.tqdm(total=None, desc=f"step {k}: {prompt[:30]}", unit="it",
                               disable=not self.enabled, position=1, leave=False)

    def __call__(self, done: int, total: int) -> None:
        if self.inner is not None:
            if self.inner.total != total:
                self.inner.total = total
            self.inner.n = done
            self.inner.refresh()

    def end_step(self) -> None:
        self.close_inner()
        self.chain.update(1)

    def close_inner(self) -> None:
        if self.inner is not None:
            self.inner.close()
            self.inner = None

    def close(self) -> None:
        self.close_inner()
        self.chain.close()
