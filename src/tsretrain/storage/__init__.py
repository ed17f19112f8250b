"""Where stage outputs live, and how they are written safely."""
