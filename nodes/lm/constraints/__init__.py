"""Constraint nodes (`constraint.*`): each returns a Potential over bytes (nodes/lm/potential.py); regex and
lexicon constraints are byte automata (automaton.py), JSON schema and Lark grammars go through llguidance."""


def nodes() -> list[type]:
    from .json_schema import JsonSchemaConstraint
    from .lark import LarkConstraint
    from .lexicon import LexiconConstraint
    from .regex import RegexConstraint

    return [RegexConstraint, JsonSchemaConstraint, LarkConstraint, LexiconConstraint]
