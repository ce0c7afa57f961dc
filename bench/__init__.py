"""weft benchmark harness: weft vs the reference bridge + host-local plugins, in throwaway netns."""
