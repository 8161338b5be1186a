"""Build a task object from `config.task`."""
from __future__ import annotations

from fttrace.errors import UserError
from fttrace.tasks import pcfg

TASKS = pcfg.TASKS


def build_task(config) -> pcfg.PCFGTask:
    t = config.task
    rules = pcfg.DEFAULT_RULES if t.grammar == "default" else t.grammar
    try:
        grammar = pcfg.Grammar(rules, t.n_terminals)
        return pcfg.PCFGTask(grammar, task=t.name, data_len=t.data_len, pt_operand=t.pt_operand,
                             ft_operand=t.ft_operand)
    except (ValueError, TypeError, IndexError) as e:
        raise UserError(f"config section 'task': {e}") from None
