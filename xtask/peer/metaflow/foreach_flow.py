"""Peer of braid's `fanout` bench flow: a foreach over 0..n squaring each item, a join summing."""

from metaflow import FlowSpec, Parameter, step


class ForeachFlow(FlowSpec):
    n = Parameter("n", default=100, type=int, help="how many items to fan out over")

    @step
    def start(self):
        self.items = list(range(self.n))
        self.next(self.work, foreach="items")

    @step
    def work(self):
        self.out = self.input * self.input
        self.next(self.join)

    @step
    def join(self, inputs):
        self.total = sum(i.out for i in inputs)
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    ForeachFlow()
