"""Reports: tables, figures (matplotlib Figure objects, never pyplot state) and Markdown/HTML documents."""
