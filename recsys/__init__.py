"""recsys: a text-aware recommendation engine.

Importing the package sets (only where unset) the environment variables that keep Hugging Face's
weight-loading and download bars out of a run's output (``recsys.console``): they must be set
before ``transformers`` is first imported, which every recsys module does lazily, after this.
"""

from recsys.console import quiet_environment

quiet_environment()
