"""Tables and figures made from tracked evaluation results."""
