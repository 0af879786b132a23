"""The demo: a shipments/documents schema and a writer that keeps it moving."""
