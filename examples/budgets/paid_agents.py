"""Two agents that pay for what they use, each behind a budget (see fleet.toml next to this file).

The paid services are simulated in-process so the example runs anywhere and costs nothing, but the
agents use them exactly as they would a real vendor API or LLM: reserve first (``self.spend``), call,
settle what the call really cost. ``BudgetExceeded`` means the budget said no before anything was spent;
both agents then keep their last view.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from agents import Agent, BudgetExceeded, Signal


class QuoteVendor:
    """A paid market-data vendor (simulated): one call = one "fair value" estimate."""

    def __init__(self) -> None:
        self.calls = 0

    def fair_value(self, closes: list[float]) -> float:
        self.calls += 1
        return sum(closes) / len(closes)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class SimulatedLLM:
    """An LLM endpoint (simulated): deterministic answers, token counts like a real API reports them."""

    def complete(self, prompt: str, max_tokens: int) -> Completion:
        digest = hashlib.sha256(prompt.encode()).digest()
        text = "bullish" if digest[0] % 2 else "bearish"
        used = min(max_tokens, 60 + digest[1] % 80)
        return Completion(text, prompt_tokens=len(prompt) // 4, completion_tokens=used)


class VendorQuoteAgent(Agent):
    """Every ``every`` bars, buys a fair-value quote (1 api call) and goes long below it, flat above."""

    every = 30
    lookback = 60

    def on_start(self) -> None:
        self.vendor = QuoteVendor()
        self.closes: list[float] = []
        self.fair: float | None = None
        self.seen = 0

    def on_bar(self, bar):
        self.closes = ([*self.closes, bar.close])[-self.lookback :]
        self.seen += 1
        if self.seen % self.every == 0:
            try:
                with self.spend("api_calls", estimate=1):  # charged 1 call when the block ends
                    self.fair = self.vendor.fair_value(self.closes)
            except BudgetExceeded:
                pass  # no more quotes: keep trading on the last one (until the budget suspends us)
        if self.fair is None:
            return None
        return Signal(bar.symbol, weight=0.5 if bar.close < self.fair else 0.0)


class LlmAnalystAgent(Agent):
    """Every ``every`` bars asks an LLM for a view of the last bars; follows it until the next answer."""

    every = 30
    max_tokens = 150

    def on_start(self) -> None:
        self.llm = SimulatedLLM()
        self.recent: list[float] = []
        self.view = 0.0
        self.seen = 0

    def on_bar(self, bar):
        self.recent = ([*self.recent, bar.close])[-20:]
        self.seen += 1
        if self.seen % self.every == 0:
            prompt = f"{bar.symbol} last closes: " + ", ".join(f"{c:.2f}" for c in self.recent) + ". View?"
            try:
                with self.spend("llm_tokens", estimate=len(prompt) // 4 + self.max_tokens) as s:
                    reply = self.llm.complete(prompt, self.max_tokens)
                    s.settle(reply.total_tokens)  # what the API reported; the rest is released
                self.view = 0.8 if reply.text == "bullish" else -0.3
            except BudgetExceeded as refused:
                self.log.debug("no LLM call: %s", refused)
        return Signal(bar.symbol, weight=self.view)
