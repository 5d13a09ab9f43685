# R systemfit references on the systems of peer_systems.py -> systemfit_references.json
#
# Not part of the test suite. Needs R with systemfit (Debian: r-cran-systemfit) and,
# for --export-data only, AER (r-cran-aer). From the repository root:
#
#   Rscript tests/data/make_systemfit_references.R --export-data   # kmenta, electricity CSVs
#   Rscript tests/data/make_systemfit_references.R
#
# The equations are those of tests/data/peer_systems.py, built here again from the same
# stored CSVs (same columns, same regressor order); parameter names are
# "<label>_<regressor>" with the intercept called "const". JSON is written by hand with
# 17 significant digits (jsonlite rounds to 15).

suppressPackageStartupMessages(library(systemfit))

args <- commandArgs(trailingOnly = TRUE)
here <- "tests/data"

if ("--export-data" %in% args) {
  data(Kmenta, package = "systemfit")
  write.csv(Kmenta, file.path(here, "kmenta_data.csv"), row.names = FALSE)
  data(Electricity1955, package = "AER")
  write.csv(Electricity1955, file.path(here, "electricity_data.csv"), row.names = FALSE)
  cat("wrote kmenta_data.csv electricity_data.csv\n")
  quit(status = 0)
}

# ---- minimal JSON writer ----------------------------------------------------------
jnum <- function(x) ifelse(is.na(x), "null", sprintf("%.17g", x))
jstr <- function(x) paste0("\"", gsub("\"", "\\\\\"", gsub("\\\\", "\\\\\\\\", x)), "\"")
to_json <- function(x, indent = 0) {
  pad <- strrep(" ", indent + 1)
  if (is.null(x)) return("null")
  if (is.matrix(x)) return(to_json(lapply(seq_len(nrow(x)), function(i) unname(x[i, ])), indent))
  if (is.list(x)) {
    if (length(x) == 0) return(if (is.null(names(x))) "[]" else "{}")
    items <- vapply(x, to_json, "", indent = indent + 1)
    if (!is.null(names(x))) items <- paste0(jstr(names(x)), ": ", items)
    br <- if (is.null(names(x))) c("[", "]") else c("{", "}")
    return(paste0(br[1], "\n", pad, paste(items, collapse = paste0(",\n", pad)), "\n",
                  strrep(" ", indent), br[2]))
  }
  if (is.logical(x) && length(x) == 1) return(if (x) "true" else "false")
  if (is.character(x)) {
    s <- jstr(x)
    return(if (length(x) == 1 && is.null(attr(x, "array"))) s else paste0("[", paste(s, collapse = ", "), "]"))
  }
  v <- jnum(as.numeric(x))
  if (length(x) == 1 && is.null(attr(x, "array"))) v else paste0("[", paste(v, collapse = ", "), "]")
}
arr <- function(x) { attr(x, "array") <- TRUE; x }   # a length-1 vector written as [x]

# ---- systems (as peer_systems.py) ------------------------------------------------
french_factors <- list(S1V1 = c("MktRF", "SMB", "HML"), S1V5 = c("MktRF", "SMB", "HML"),
                       S5V1 = c("MktRF", "SMB", "HML"), S5V5 = c("MktRF", "SMB", "HML"),
                       S3M1 = c("MktRF", "SMB", "HML", "Mom"),
                       S3M5 = c("MktRF", "SMB", "HML", "Mom"),
                       NoDur = "MktRF", Enrgy = "MktRF")
years <- 1980:1987

# each system: data frame, list(label = list(dep = column, regs = columns, names = names))
build <- function(name) {
  d <- read.csv(file.path(here, paste0(name, "_data.csv")))
  eqs <- list()
  if (name == "french") {
    for (p in names(french_factors)) {
      d[[paste0(p, "_ex")]] <- d[[p]] - d$RF
      eqs[[p]] <- list(dep = paste0(p, "_ex"), regs = french_factors[[p]])
    }
    restr <- c("S1V1_SMB = S1V5_SMB", "S5V1_SMB = S5V5_SMB", "NoDur_MktRF = 1")
  } else if (name == "wage") {
    for (y in years) {
      eqs[[paste0("y", y)]] <- list(
        dep = paste0("lwage_", y),
        regs = c("educ", "black", "hisp", paste0(c("exper", "expersq", "married", "union"), "_", y)),
        names = c("educ", "black", "hisp", "exper", "expersq", "married", "union"))
    }
    restr <- c(paste0("y", years[-1], "_educ = y1980_educ"),
               paste0("y", years[-1], "_union = y1980_union"))
  } else if (name == "interest") {
    n <- nrow(d)
    d$Dp_l1 <- c(NA, d$Dp[-n]); d$R_l1 <- c(NA, d$R[-n])
    for (q in 2:4) d[[paste0("q", q)]] <- as.numeric(d$quarter == q)
    d <- d[-1, ]
    eqs$Dp <- list(dep = "Dp", regs = c("Dp_l1", "R_l1", "q2", "q3", "q4"))
    eqs$R <- list(dep = "R", regs = c("Dp", "R_l1"))
    restr <- "Dp_R_l1 = 0"
  } else if (name == "kmenta") {
    eqs$demand <- list(dep = "consump", regs = c("price", "income"))
    eqs$supply <- list(dep = "consump", regs = c("price", "farmPrice", "trend"))
    restr <- character(0)
  } else if (name == "electricity") {
    d$lpl <- log(d$labor / d$fuel); d$lpk <- log(d$capital / d$fuel); d$lq <- log(d$output)
    eqs$labor <- list(dep = "laborshare", regs = c("lpl", "lpk", "lq"))
    eqs$capital <- list(dep = "capitalshare", regs = c("lpl", "lpk", "lq"))
    restr <- "labor_lpk = capital_lpl"
  }
  for (lab in names(eqs)) if (is.null(eqs[[lab]]$names)) eqs[[lab]]$names <- eqs[[lab]]$regs
  forms <- lapply(eqs, function(e) as.formula(paste(e$dep, "~", paste(e$regs, collapse = " + "))))
  pnames <- unlist(lapply(names(eqs), function(l) paste0(l, "_", c("const", eqs[[l]]$names))))
  list(d = d, eqs = eqs, forms = forms, pnames = pnames, restr = restr)
}

# systemfit names coefficients <label>_(Intercept), <label>_<column>; restrictions are
# written with our names, so translate them to systemfit's
sf_restr <- function(sys, fitnames) {
  out <- sys$restr
  for (k in seq_along(sys$pnames)) {
    out <- gsub(paste0("\\b", sys$pnames[k], "\\b"), fitnames[k], out, perl = TRUE)
  }
  out
}

record <- function(fit, sys, call) {
  stopifnot(length(coef(fit)) == length(sys$pnames))
  V <- vcov(fit)
  list(call = call,
       params = unname(coef(fit)),
       std_errors = unname(sqrt(pmax(diag(V), 0))),
       residCovEst = if (is.null(fit$residCovEst)) NULL else unname(as.matrix(fit$residCovEst)),
       residCov = unname(as.matrix(fit$residCov)),
       logLik = as.numeric(logLik(fit)),
       iterations = if (is.null(fit$iter)) NULL else arr(fit$iter))
}

# iterated SUR stops when ||b - b_old|| / ||b_old|| < tol; the wage system's
# rounding floor is near 1e-12 (it wanders there for thousands of iterations)
iter_tol <- function(name) if (name == "wage") 1e-11 else 1e-12

fits_of <- function(name, ml_exists) {
  sys <- build(name)
  tol <- iter_tol(name)
  it_call <- sprintf("maxiter=1000, tol=%g", tol)
  base <- systemfit(sys$forms, method = "OLS", data = sys$d)
  fitnames <- names(coef(base))
  rs <- sf_restr(sys, fitnames)
  out <- list()
  run <- function(key, call, ...) {
    fit <- systemfit(sys$forms, data = sys$d, ...)
    out[[key]] <<- record(fit, sys, call)
  }
  run("OLS", "systemfit(eqs, method='OLS')", method = "OLS")
  run("SUR", "systemfit(eqs, method='SUR')  # two-step, methodResidCov='geomean'", method = "SUR")
  run("SUR_noDfCor", "systemfit(eqs, method='SUR', methodResidCov='noDfCor')",
      method = "SUR", methodResidCov = "noDfCor")
  if (ml_exists) {
    run("SUR_iterated_noDfCor",
        sprintf("systemfit(eqs, method='SUR', methodResidCov='noDfCor', %s)", it_call),
        method = "SUR", methodResidCov = "noDfCor", maxiter = 1000, tol = tol)
    run("SUR_iterated_geomean",
        sprintf("systemfit(eqs, method='SUR', %s)  # not ML: dfk Sigma at the fixed point", it_call),
        method = "SUR", maxiter = 1000, tol = tol)
  }
  if (length(rs) > 0) {
    run("OLS_restricted", "systemfit(eqs, method='OLS', restrict.matrix=restrictions)",
        method = "OLS", restrict.matrix = rs)
    run("SUR_restricted", "systemfit(eqs, method='SUR', restrict.matrix=restrictions)",
        method = "SUR", restrict.matrix = rs)
    run("SUR_noDfCor_restricted",
        "systemfit(eqs, method='SUR', methodResidCov='noDfCor', restrict.matrix=restrictions)",
        method = "SUR", methodResidCov = "noDfCor", restrict.matrix = rs)
    if (ml_exists) {
      run("SUR_iterated_noDfCor_restricted",
          sprintf("systemfit(eqs, method='SUR', methodResidCov='noDfCor', %s, restrict.matrix=restrictions)", it_call),
          method = "SUR", methodResidCov = "noDfCor", maxiter = 1000, tol = tol,
          restrict.matrix = rs)
    }
  }
  list(csv = paste0(name, "_data.csv"),
       csv_sha256 = sub(" .*", "", system2("sha256sum", file.path(here, paste0(name, "_data.csv")),
                                         stdout = TRUE)),
       nobs = nrow(sys$d),
       iterated_tol = tol,
       param_names = sys$pnames,
       systemfit_names = fitnames,
       restrictions = arr(sys$restr),
       fits = out)
}

systems <- list(french = TRUE, wage = TRUE, interest = TRUE, kmenta = FALSE, electricity = TRUE)
res <- list()
for (nm in names(systems)) {
  res[[nm]] <- fits_of(nm, systems[[nm]])
  cat(nm, ":", length(res[[nm]]$fits), "fits\n")
}

conventions <- list(
  OLS = paste("Unrestricted: equation-by-equation OLS, coefficient covariance block diagonal",
              "s_i^2 (X_i'X_i)^-1 with s_i^2 = e_i'e_i/(N-p_i) (the usual OLS SEs; no",
              "cross-equation terms). Restricted: restricted LS with Sigma = I and covariance",
              "s^2 [restricted bread of X'X] with ONE pooled s^2 = sum of all e'e / (N K -",
              "(P - m)) (singleEqSigma = FALSE when restricted)."),
  SUR = paste("Two-step by default (maxiter = 1): OLS (with restrictions: the restricted LS",
              "with Sigma = I, residCovRestricted = TRUE), Sigma from its residuals, one GLS",
              "solve; covariance (X'(Sigma^-1 (x) I)X)^-1 (restricted: the top-left block of",
              "the inverse KKT matrix) with the Sigma that weighted the last solve",
              "(residCovEst). maxiter > 1 iterates until ||b - b_old||/||b_old|| < tol."),
  methodResidCov = paste("'geomean' (default): Sigma_ij = e_i'e_j / sqrt((N-p_i)(N-p_j));",
                         "'noDfCor': e_i'e_j/N. With restrictions, p_i is reduced by one for",
                         "every restriction that involves only equation i's coefficients",
                         "(nCoefLiEq), unlike linearmodels' debiased which always uses p_i.",
                         "Iterated SUR with 'geomean' is not the ML estimate (its fixed point",
                         "uses the dfk Sigma); with 'noDfCor' it is."),
  logLik = paste("Gaussian log-likelihood at the final residuals with Sigma = E'E/N",
                 "(noDfCor) whatever methodResidCov: the profiled llf of peer_references.json."),
  residCov = "residCov: Sigma of the final residuals with methodResidCov; residCovEst: the Sigma that weighted the last GLS solve."
)

ver <- function(p) as.character(packageVersion(p))
out <- list(
  description = "R systemfit fits of the systems of tests/data/peer_systems.py; param order = param_names",
  generator = "tests/data/make_systemfit_references.R",
  versions = list(R = paste(R.version$major, R.version$minor, sep = "."),
                  systemfit = ver("systemfit"), Matrix = ver("Matrix"), car = ver("car")),
  conventions = conventions,
  systems = res)
writeLines(to_json(out), file.path(here, "systemfit_references.json"))
cat("wrote tests/data/systemfit_references.json\n")
