"""The `groundtune` command: a thin layer over the Python API. This file holds the app, its one error handler and
the list of commands; each area's commands live in their own module, the options they share in `options`:

    training   demo, eval, train, sweep
    tasks      glue, classify, summarize-eval
    retrieval  index, retrieve, train-reranker, synth
    serve      serve
    merge      merge chat-vector | extract | apply, export

Heavy imports live inside each command so `--help` answers at once. A new command is a function in its area's
module and one line below (the order below is the order `--help` lists them)."""

import typer
from typer.core import TyperGroup

from groundtune.cli import merge, retrieval, serve, tasks, training
from groundtune.cli.common import fail
from groundtune.errors import GroundtuneError


class _Commands(TyperGroup):
    """Every command (merge's included) runs inside this: a groundtune error (bad input or a refused action, as
    opposed to a bug) becomes `error: <message>`, exit 2, never a traceback."""

    def invoke(self, ctx):
        from groundtune import fileio

        fileio.begin_run()  # the outputs this command approves start from none
        try:
            return super().invoke(ctx)
        except GroundtuneError as err:
            fail(err)


app = typer.Typer(
    cls=_Commands,
    help="groundtune: adapt a frozen LLM to document-grounded dialogue and Korean instructions, cheaply, "
    "and measure the result honestly.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(training.demo)
app.command("eval")(training.eval_)
app.command()(training.train)
app.command()(training.sweep)
app.command()(tasks.glue)
app.command()(retrieval.index)
app.command()(retrieval.retrieve)
app.command("train-reranker")(retrieval.train_reranker)
app.command()(retrieval.synth)
app.command()(tasks.classify)
app.command("summarize-eval")(tasks.summarize_eval)
app.command()(merge.export)
app.command()(serve.serve)
app.add_typer(merge.merge_app, name="merge")
