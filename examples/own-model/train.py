"""Train a tiny MLP on two Gaussian blobs; run by docket as a `command` job.

`docketml.start_run()` with no arguments attaches to the run `docket run` opened (it sets
DOCKET_RUN_ID, DOCKET_DB, ...). Knobs come from the protocol's params; `fire` marks where each
takes effect (the knob audit). Run directly with `--steps N` outside docket it would need
`docketml.start_run("own-model", job="train")` instead.
"""

from __future__ import annotations

import argparse

import torch
from model import MLP, blobs

import docketml


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, required=True)
    steps = parser.parse_args().steps
    torch.set_num_threads(1)
    with docketml.start_run() as run:
        torch.manual_seed(run.seed)
        lr = run.knob("lr", default=1e-3)
        hidden = run.knob("hidden", default=32)
        model = MLP(hidden)
        run.fire("hidden")  # the width is used right here
        optimiser = torch.optim.Adam(model.parameters(), lr=lr)
        run.fire("lr")
        x, y = blobs(512, seed=run.seed)
        for step in range(1, steps + 1):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if step % 50 == 0 or step == steps:
                run.metric("train_loss", float(loss), step=step)
        accuracy = float((model(x).argmax(-1) == y).float().mean())
        run.metric("train_accuracy", accuracy)
        torch.save({"hidden": hidden, "state": model.state_dict()}, "model.pt")
        run.checkpoint("model.pt")


if __name__ == "__main__":
    main()
