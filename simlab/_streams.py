"""Stream keys: one per consumer of a seed, all in one place.

Every random draw of the package comes from ``np.random.default_rng([seed, KEY])``
with one of the keys below, so two consumers given the same seed never share a
stream (and adding a consumer never shifts another one's draws). The values are
arbitrary but fixed: changing one changes every result drawn from it.
"""

#: :mod:`simlab.data`: training and test sets, forget-set selection.
DATA_TRAIN = 0x5D17A
DATA_TEST = 0x7E57
FORGET_SELECTION = 0xF06E7
#: :mod:`simlab.models`: weight initialisation.
INIT = 0x1417
#: :mod:`simlab.dynamics.train`: minibatches.
TRAIN_BATCHES = 0xBA7C4
#: :mod:`simlab.dynamics.unlearn`: retain and forget minibatches, twin perturbation.
UNLEARN_RETAIN_BATCHES = 0x4E7A1
UNLEARN_FORGET_BATCHES = 0xF0467
UNLEARN_PERTURBATION = 0xD0
#: :mod:`simlab.experiments.cnn_unlearning`: perturbations and minibatches per run.
CNN_UNLEARNING_RUNS = 0xC11
#: :mod:`simlab.experiments.stable_minima`: perturbations and minibatches of the
#: escape-from-a-minimum twin runs.
STABLE_MINIMA_ESCAPE = 0x57AB1E
#: :mod:`simlab.experiments.benign_overfitting`: bootstrap over seeds.
BENIGN_BOOTSTRAP = 0xB007
#: :mod:`simlab.predict`: minibatch sequences of the drift-aware prediction.
PREDICT_DRIFT = 0xD21F7
