"""Knowledge base: knowledge sources, FAQ import/export, hybrid retrieval, the
answering policy and the plans the conversation manager executes.

Modules: ``passages`` (``Passage``, what retrieval returns from any source,
and the ``KnowledgeSource`` protocol), ``faq_source`` (the FAQ as the first
source), ``importer`` (parsing files), ``retrieval`` and ``index`` (the FAQ's
index and search), ``policy`` (thresholds, prompt, guard and citations),
``drafting``, ``knowledge_base`` (the facade the manager holds: sources,
settings, plans), ``commands`` (chat commands), ``tuning`` and
``evaluation``. This package imports none of them itself, so importing one
module never drags in the rest.
"""
