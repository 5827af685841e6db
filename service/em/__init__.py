"""The EM solver core: numpy and scipy only, no knowledge of HTTP or Pydantic."""
