"""Build a task object from `config.task`: its `name` picks a builder in TASKS (counter | index: PCFG tasks;
tracr: a compiled program); `register` adds one (docs/howto.md, "Add a task")."""
from __future__ import annotations

from typing import Callable

from fttrace.errors import UserError
from fttrace.answer.tasks import pcfg
from fttrace.answer.tasks.interface import Task


def _pcfg(t) -> Task:
    rules = pcfg.DEFAULT_RULES if t.grammar == "default" else t.grammar
    grammar = pcfg.Grammar(rules, t.n_terminals)
    return pcfg.PCFGTask(grammar, task=t.name, data_len=t.data_len, pt_operand=t.pt_operand,
                         ft_operand=t.ft_operand, other_operands=tuple(t.other_operands),
                         control_operand=t.control_operand, holdout=t.holdout, candidates=t.candidates)


def _tracr(t) -> Task:
    try:  # imported here: the compiler (tracr, haiku) loads only for a compiled task
        from fttrace.answer.tasks.programs import SOFTMAX_COLDNESS
        from fttrace.answer.tasks.tracr_task import TracrTask
    except ImportError as e:
        raise UserError(f"task 'tracr' needs the Tracr compiler ({e.name or e}): "
                        "pip install 'fttrace[tracr]'") from None
    return TracrTask(program=t.program, ft_target=t.ft_target,
                     softmax_coldness=t.get("softmax_coldness", SOFTMAX_COLDNESS))


# name -> builder: `config.task` (the ConfigDict) -> Task. A builder raises ValueError / TypeError / IndexError /
# AttributeError for a bad section; build_task turns them into one error naming the section.
TASKS: dict[str, Callable] = {**{name: _pcfg for name in pcfg.TASKS}, "tracr": _tracr}


def register(name: str, builder: Callable) -> None:
    """Make `config.task.name = name` build its task with `builder(config.task)`."""
    TASKS[name] = builder


def build_task(config) -> Task:
    t = config.task
    if t.name not in TASKS:
        raise UserError(f"config key 'task.name': unknown task {t.name!r}; known: {', '.join(TASKS)}")
    try:
        return TASKS[t.name](t)
    except (ValueError, TypeError, IndexError) as e:
        raise UserError(f"config section 'task': {e}") from None
    except AttributeError as e:
        raise UserError(f"config section 'task': missing key ({e})") from None
