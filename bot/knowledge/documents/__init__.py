"""Documents as a knowledge source: parsing, chunking, crawling, storage
through ``storage.documents_repo``, and the ``document`` passages."""
