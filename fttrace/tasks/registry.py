"""Build a task object from `config.task`: `name` counter | index (PCFG tasks) or tracr (a compiled program)."""
from __future__ import annotations

from fttrace.errors import UserError
from fttrace.tasks import pcfg
from fttrace.tasks.interface import Task

TRACR = "tracr"
TASKS = pcfg.TASKS + (TRACR,)


def build_task(config) -> Task:
    t = config.task
    try:
        if t.name == TRACR:  # imported here: the compiler (tracr, haiku) loads only for a compiled task
            try:
                from fttrace.tasks.tracr_task import TracrTask
            except ImportError as e:
                raise UserError(f"task 'tracr' needs the Tracr compiler ({e.name or e}): pip install "
                                "'fttrace[tracr]'") from None
            return TracrTask(program=t.program, ft_target=t.ft_target)
        rules = pcfg.DEFAULT_RULES if t.grammar == "default" else t.grammar
        grammar = pcfg.Grammar(rules, t.n_terminals)
        return pcfg.PCFGTask(grammar, task=t.name, data_len=t.data_len, pt_operand=t.pt_operand,
                             ft_operand=t.ft_operand, other_operands=tuple(t.other_operands),
                             control_operand=t.control_operand, holdout=t.holdout, candidates=t.candidates)
    except (ValueError, TypeError, IndexError) as e:
        raise UserError(f"config section 'task': {e}") from None
    except AttributeError as e:
        raise UserError(f"config section 'task': missing key ({e})") from None
