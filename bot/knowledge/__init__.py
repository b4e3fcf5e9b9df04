"""Knowledge base: FAQ import/export, hybrid retrieval, the answering policy
and the plans the conversation manager executes.

Modules: ``importer`` (parsing files), ``retrieval`` (index and search),
``policy`` (thresholds, prompt and guard), ``plans``, ``drafting``,
``knowledge_base`` (the facade the manager holds), ``commands`` (chat
commands), ``tuning`` and ``evaluation``. This package imports none of them
itself, so importing one module never drags in the rest.
"""
