"""Search over messages and registered documents (issue 5): one query language for both.

``query`` parses the text a person types into terms (pure), ``sql`` turns terms into SQL for
SQLite FTS5 or PostgreSQL full-text search, ``index`` builds what is stored per message and per
register entry (over diacritic-folded text), ``stage`` is the pipeline stage that keeps the index
up to date, ``snippets`` marks matched words in the original text. See docs/search.md.
"""
