"""TotalSegmentator inside tsretrain: its model catalogue and the stand-in weights that let its code run offline."""
