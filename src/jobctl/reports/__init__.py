"""What ``jobctl report`` builds (:mod:`.model`) and how it is written out (:mod:`.render`:
Jinja2 templates for text, Markdown and HTML; JSON with stable keys)."""
