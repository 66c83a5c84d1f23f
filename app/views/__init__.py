"""One module per tab: compare, bank, temperature, umap, longtail, train (plus shared helpers)."""
