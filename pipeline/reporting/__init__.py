"""Human-facing outputs: the self-contained HTML report and its plots."""
