//! Ground-truth labels of a simulated dataset (`labels.csv`).
