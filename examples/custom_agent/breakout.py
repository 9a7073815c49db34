"""A user's own agent, in its own file next to its config: a Donchian channel breakout."""

from collections import deque

from agents import Agent, Signal


class Breakout(Agent):
    """Long when the close breaks above the highest high of the last ``window`` bars; flat when it
    breaks below the lowest low."""

    window = 55
    size = 0.5

    def on_start(self):
        self.highs = {s: deque(maxlen=self.window) for s in self.symbols}
        self.lows = {s: deque(maxlen=self.window) for s in self.symbols}
        self.held = dict.fromkeys(self.symbols, 0.0)

    def on_bar(self, bar):
        highs, lows = self.highs[bar.symbol], self.lows[bar.symbol]
        signal = None
        if len(highs) == self.window:
            if bar.close > max(highs) and self.held[bar.symbol] <= 0:
                signal = Signal(bar.symbol, self.size)
            elif bar.close < min(lows) and self.held[bar.symbol] > 0:
                signal = Signal(bar.symbol, 0.0)
        if signal is not None:
            self.held[bar.symbol] = signal.weight
            self.log.info("%s %s at %.2f", bar.symbol, "enter" if signal.weight else "exit", bar.close)
        highs.append(bar.high)
        lows.append(bar.low)
        return signal

    def state(self):
        return {
            "highs": {s: list(d) for s, d in self.highs.items()},
            "lows": {s: list(d) for s, d in self.lows.items()},
            "held": dict(self.held),
        }

    def restore(self, state):
        self.highs = {s: deque(v, maxlen=self.window) for s, v in state["highs"].items()}
        self.lows = {s: deque(v, maxlen=self.window) for s, v in state["lows"].items()}
        self.held = dict(state["held"])
