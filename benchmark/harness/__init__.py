"""The harness: method plugins, suites, the job scheduler, the results store and the reports.

- ``registry``  ``Method`` base class, ``@register_method``, ``get_method`` / ``list_methods`` / ``make_config``
- ``suite``     suite YAML -> validated ``Suite`` -> deduplicated ``Job`` list (keys, code version)
- ``store``     ``results/<suite>/<key>/``: atomic record.json, predictions.json.gz, job.log; provenance
- ``scheduler`` ``LocalExecutor`` (forkserver children, CPU workers or GPU pool), ``SlurmExecutor`` (submitit)
- ``report``    tables (CSV + Markdown) and figures rebuilt from the records; ``@register_figure``
- ``cli``       ``run`` / ``report`` / ``list-methods`` for ``python -m benchmark``; ``run_all.py`` uses it
- ``runner``    the job runner and data preparation the scheduler calls by name
"""
from benchmark.harness.registry import (ConfigError, Method, MethodContext, get_method, list_methods, make_config,
                                        register_method)

__all__ = ["ConfigError", "Method", "MethodContext", "get_method", "list_methods", "make_config", "register_method"]
