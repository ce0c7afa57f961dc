"""CNI spec conformance suite for weft (and any other CNI plugin), driven through libcni."""
