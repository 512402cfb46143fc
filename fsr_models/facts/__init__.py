"""The zoo's facts, each written once and split by meaning: the paper's protocol and results (`paper`), the
networks and where their weights are published (`networks`), the data sets (`datasets`).

Models, data, training, evaluation and cards read them from here. These modules import nothing of the package, so
any module may import them.
"""
