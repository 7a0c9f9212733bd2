"""Model soups (Wortsman et al. 2022, arXiv 2203.05482): average fine-tunes of one start.

- `fingerprint`: the start of a run, recorded beside every training export
  (`onevision_start.json`) so that soups of different starts are refused;
- `average`: the uniform soup, streamed shard by shard (`uniform_soup`);
- `greedy`: the greedy soup on a held-out split (`greedy_soup`);
- `grid`: the ingredient runs of one stage recipe over a hyperparameter grid (`plan_grid`).

Nothing is imported here: training imports `fingerprint` alone, without the rest.
"""
