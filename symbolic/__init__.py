"""symgrad's symbolic engine: the modelling language, the rule table, reverse mode, derivations."""

__version__ = "0.1.0"
