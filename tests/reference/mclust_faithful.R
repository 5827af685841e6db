#!/usr/bin/env Rscript
# Reference values from R's mclust for the Gaussian-mixture model-selection
# feature, on R's built-in `faithful` data (272 x 2: eruptions, waiting).
#
# Regenerate (from the repository root):
#   apt-get install -y --no-install-recommends r-base-core r-cran-mclust
#   Rscript tests/reference/mclust_faithful.R
# Output: tests/reference/mclust_faithful.json (written next to this script).
#
# Uses base R + mclust only; JSON is written by hand with sprintf("%.17g").
#
# Mapping of our covariance types to mclust models:
#   full = VVV, diag = VVI, spherical = VII, tied = EEE
# Sign conventions:
#   mclust BIC = 2*loglik - npar*log(n)   (higher is better)
#   ours   BIC = -2*loglik + npar*log(n)  (lower is better)  => ours = -mclust
#   mclust ICL (icl.Mclust) = BIC_mclust + 2*sum_i sum_k C_ik*log(z_ik), where C is
#   the HARD (MAP) 0/1 classification matrix, not z itself. So
#   -ICL_mclust = BIC_ours + 2*(-sum_i log z_{i,map(i)}).  The "soft" variant
#   BIC_mclust + 2*sum(z*log z) is also recorded per fit (icl_soft).
#
# No covariance regularisation: mclust's default is prior = NULL (no conjugate
# prior / no shrinkage, no added diagonal), which is what every call below uses.

suppressPackageStartupMessages(library(mclust))

## ---------------------------------------------------------------- paths
args <- commandArgs(trailingOnly = FALSE)
file_arg <- sub("^--file=", "", args[grep("^--file=", args)])
out_dir <- if (length(file_arg) == 1) dirname(normalizePath(file_arg)) else
  file.path("tests", "reference")
out_file <- file.path(out_dir, "mclust_faithful.json")

## ---------------------------------------------------------------- JSON helpers
num1 <- function(x) {
  if (is.null(x) || length(x) == 0 || is.na(x)) return("null")
  if (is.infinite(x)) return("null")
  if (is.logical(x)) return(if (x) "true" else "false")
  if (is.integer(x)) return(sprintf("%d", x))
  s <- sprintf("%.17g", x)
  s
}
str1 <- function(s) paste0('"', gsub('"', '\\\\"', s), '"')
jvec <- function(x) paste0("[", paste(vapply(x, num1, ""), collapse = ", "), "]")
jmat <- function(m) {  # row-major list of rows
  paste0("[", paste(apply(m, 1, function(r) jvec(r)), collapse = ", "), "]")
}
jarr_Gdd <- function(a) {  # a is d x d x G (mclust) -> G x d x d
  G <- dim(a)[3]
  paste0("[", paste(vapply(seq_len(G), function(k) jmat(a[, , k]), ""),
                    collapse = ", "), "]")
}
jobj <- function(lst, indent = "") {
  # lst: named list of already-serialised JSON strings
  ind2 <- paste0(indent, "  ")
  body <- paste0(ind2, str1(names(lst)), ": ", unlist(lst), collapse = ",\n")
  paste0("{\n", body, "\n", indent, "}")
}

## ---------------------------------------------------------------- data
X <- as.matrix(faithful)           # columns: eruptions, waiting
n <- nrow(X); d <- ncol(X)
models <- c("VVV", "VVI", "VII", "EEE")

## ---------------------------------------------------------------- selection
# Mclust's own initialisation (model-based agglomerative hierarchical
# clustering, mclust.options("hcUse")), prior = NULL, default emControl().
bic_table_json <- function(B) {
  # B: mclustBIC matrix (rows = G, cols = models). NA where mclust failed.
  per_model <- lapply(colnames(B), function(m) {
    jobj(setNames(as.list(vapply(B[, m], num1, "")), rownames(B)), "        ")
  })
  jobj(setNames(per_model, colnames(B)), "      ")
}

m_vvv <- Mclust(X, G = 1:6, modelNames = "VVV", verbose = FALSE)
m_all <- Mclust(X, G = 1:6, modelNames = models, verbose = FALSE)
icl_all <- mclustICL(X, G = 1:6, modelNames = models, verbose = FALSE)

sel_entry <- function(m) {
  jobj(list(
    chosen_G = num1(as.integer(m$G)),
    chosen_model = str1(m$modelName),
    chosen_bic_mclust = num1(m$bic),
    chosen_loglik = num1(m$loglik),
    chosen_npar = num1(as.integer(m$df)),
    bic_mclust = bic_table_json(m$BIC)
  ), "    ")
}
icl_best <- which(icl_all == max(icl_all, na.rm = TRUE), arr.ind = TRUE)[1, ]
selection <- jobj(list(
  note = str1(paste(
    "Mclust(faithful, G = 1:6, modelNames = ...) with its default hierarchical",
    "clustering initialisation and default emControl(); prior = NULL",
    "(no regularisation). Tables are mclust-sign (higher is better); our",
    "BIC = -bic_mclust, our ICL = -icl_mclust. ICL uses icl.Mclust (hard MAP",
    "classification). Table layout: model -> G -> value; null = NA (failed).")),
  hcUse = str1(mclust.options("hcUse")),
  VVV_only = sel_entry(m_vvv),
  four_models = sel_entry(m_all),
  four_models_icl_mclust = bic_table_json(icl_all),
  four_models_icl_best_G = num1(as.integer(rownames(icl_all)[icl_best[1]])),
  four_models_icl_best_model = str1(colnames(icl_all)[icl_best[2]])
), "  ")

## ---------------------------------------------------------------- shared starts
# START RULE (deterministic, easy to rebuild in Python):
#  * o = order(waiting, eruptions): row indices sorted by waiting, ties broken
#    by eruptions, remaining ties by original row order (stable).
#  * For G components, the k-th start mean (k = 1..G) is the full row
#    faithful[o[p_k], ] with p_k = ((2k-1)*n) %/% (2G) + 1   (1-based),
#    i.e. the mid-point order statistic of the k-th of G equal blocks.
#    Python (0-based): o = np.lexsort((eruptions, waiting));
#                      p_k = ((2k-1)*n)//(2G), k = 1..G; mean_k = X[o[p_k]].
#  * S = cov(faithful): unbiased sample covariance (denominator n-1).
#    VVV: every component starts with S;  VVI: diag(diag(S)) for every component;
#    VII: mean(diag(S)) * I for every component; EEE: S shared.
#  * weights = 1/G each.
o <- order(X[, "waiting"], X[, "eruptions"])
S <- cov(X)

make_start <- function(G, model) {
  pos <- ((2 * seq_len(G) - 1) * n) %/% (2 * G) + 1
  rows <- o[pos]
  mu <- t(X[rows, , drop = FALSE])          # d x G (mclust layout)
  dimnames(mu) <- list(colnames(X), NULL)
  Sk <- switch(model,
               VVV = S,
               EEE = S,
               VVI = diag(diag(S)),
               VII = mean(diag(S)) * diag(d))
  dimnames(Sk) <- list(colnames(X), colnames(X))
  sigma <- array(Sk, c(d, d, G), dimnames = list(colnames(X), colnames(X), NULL))
  variance <- switch(model,
    VVV = list(modelName = "VVV", d = d, G = G, sigma = sigma,
               cholsigma = array(chol(Sk), c(d, d, G))),
    EEE = list(modelName = "EEE", d = d, G = G, sigma = sigma,
               Sigma = Sk, cholSigma = chol(Sk)),
    VVI = {
      scale <- prod(diag(Sk))^(1 / d)       # sigma_k = scale_k * diag(shape_k), prod(shape)=1
      list(modelName = "VVI", d = d, G = G, sigma = sigma,
           scale = rep(scale, G), shape = matrix(diag(Sk) / scale, d, G))
    },
    VII = list(modelName = "VII", d = d, G = G, sigma = sigma,
               sigmasq = rep(Sk[1, 1], G), scale = rep(Sk[1, 1], G),
               shape = rep(1, d)))
  list(rows = rows, pos = pos,
       parameters = list(pro = rep(1 / G, G), mean = mu, variance = variance))
}

ctrl <- emControl(tol = c(1e-12, sqrt(.Machine$double.eps)),
                  itmax = c(10000L, .Machine$integer.max))

fits <- list()
for (G in 1:4) for (model in models) {
  st <- make_start(G, model)
  # The start must be accepted by mclust's E-step (it stops on a missing /
  # malformed variance component); estep() also gives the start loglik.
  e0 <- estep(data = X, modelName = model, parameters = st$parameters)
  stopifnot(is.finite(e0$loglik))
  # em() = one E-step from the supplied parameters (giving z), then me():
  # alternating M-step / E-step until the relative loglik change
  # |l_t - l_{t-1}| / (1 + |l_t|) < tol[1]. So mclust really starts from the
  # shared parameters; "iterations" counts M+E sweeps after that first E-step.
  fit <- em(data = X, modelName = model, parameters = st$parameters,
            prior = NULL, control = ctrl, warn = TRUE)
  info <- attr(fit, "info")
  rc <- attr(fit, "returnCode")
  ok <- isTRUE(rc == 0) && is.finite(fit$loglik)
  npar <- nMclustParams(model, d, G)
  entry <- list(
    G = num1(as.integer(G)), model = str1(model),
    start_rows_1based = jvec(as.integer(st$rows)),
    start_order_positions_1based = jvec(as.integer(st$pos)),
    start_weights = jvec(st$parameters$pro),
    start_means = jmat(t(st$parameters$mean)),
    start_covariances = jarr_Gdd(st$parameters$variance$sigma),
    start_loglik = num1(e0$loglik),
    return_code = num1(as.integer(rc)),
    warning = if (is.null(attr(fit, "WARNING"))) "null" else str1(attr(fit, "WARNING")),
    npar = num1(as.integer(npar)))
  if (ok) {
    z <- fit$z
    b <- bic(model, fit$loglik, n, d, G)
    C <- matrix(0, n, G); C[cbind(seq_len(n), max.col(z, ties.method = "first"))] <- 1
    zlogz <- ifelse(z > 0, z * log(z), 0)
    icl_hard <- b + 2 * sum(C * ifelse(z > 0, log(z), 0))   # == icl.Mclust
    # check: final loglik reproduces from the returned parameters
    e1 <- estep(data = X, modelName = model, parameters = fit$parameters)
    entry <- c(entry, list(
      loglik = num1(fit$loglik),
      loglik_recomputed_estep = num1(e1$loglik),
      bic_mclust = num1(b),
      bic_ours = num1(-b),
      icl_mclust = num1(icl_hard),
      icl_ours = num1(-icl_hard),
      icl_soft_mclust = num1(b + 2 * sum(zlogz)),
      entropy_soft = num1(-sum(zlogz)),
      iterations = num1(as.integer(info[["iterations"]])),
      final_rel_error = num1(info[["error"]]),
      weights = jvec(fit$parameters$pro),
      means = jmat(t(fit$parameters$mean)),
      covariances = jarr_Gdd(fit$parameters$variance$sigma)))
  } else {
    entry <- c(entry, list(loglik = "null", bic_mclust = "null"))
  }
  fits[[length(fits) + 1]] <- jobj(entry, "    ")
}

## ---------------------------------------------------------------- write
out <- jobj(list(
  description = str1(paste(
    "mclust reference for GMM model selection on R's faithful data.",
    "Mapping full=VVV, diag=VVI, spherical=VII, tied=EEE. mclust signs:",
    "bic_mclust = 2*loglik - npar*log(n) (higher better); ours = -bic_mclust.")),
  mclust_version = str1(as.character(packageVersion("mclust"))),
  R_version = str1(R.version.string),
  regularisation = str1("none: prior = NULL (mclust default); no covariance regularisation/shrinkage"),
  n = num1(as.integer(n)), d = num1(as.integer(d)),
  columns = paste0("[", paste(str1(colnames(X)), collapse = ", "), "]"),
  data = jmat(X),
  selection = selection,
  fits_em_control = jobj(list(
    tol = jvec(ctrl$tol), itmax = jvec(as.integer(ctrl$itmax)),
    eps = num1(ctrl$eps), equalPro = "false",
    convergence = str1("|l_t - l_{t-1}| / (1 + |l_t|) < tol[1] (mclust Fortran me* loop)")), "  "),
  start_rule = str1(paste(
    "o = order(waiting, eruptions) (stable; python np.lexsort((eruptions, waiting)));",
    "for G comps, mean_k = faithful[o[p_k], ] with p_k = ((2k-1)*n) %/% (2G) + 1 (1-based),",
    "k=1..G (0-based python: ((2k-1)*n)//(2G)); S = cov(faithful) with n-1 denominator;",
    "VVV: S per component; VVI: diag(diag(S)) per component; VII: mean(diag(S))*I per",
    "component; EEE: S shared; weights 1/G. em() does an E-step from these parameters",
    "first, then iterates M/E steps.")),
  layout = str1("data: list of [eruptions, waiting] rows; means: G x d; covariances: G x d x d"),
  fits = paste0("[\n    ", paste(fits, collapse = ",\n    "), "\n  ]")
))
writeLines(out, out_file)
cat("wrote", out_file, "\n")
