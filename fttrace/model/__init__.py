"""The transformer every study trains (transformer), nested parameter paths (trees), and one member's model as a
notebook opens it (member: cached activations, ablations, patches, export)."""
