"""spaCy components of albert-srl: the SRL pipe, its model, decoder and scorer."""
