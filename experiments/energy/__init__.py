"""Energy networks beyond single modules: the pictures the Hopfield and Boltzmann
experiments share (restoration strips, GIFs, energy traces) and the capacity study."""
