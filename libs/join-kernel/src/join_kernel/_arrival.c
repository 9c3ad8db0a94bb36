/* The joiner's arrival loop for the common plan shape, in C.
 *
 * It does what the generated Python arrival loop of joiner/engine/join.py does, for a plan whose
 * hash key is made of top-level fields, whose filters are `field <op> number` or `field = "text"`
 * (or !=), and whose select is an object of top-level fields of either stream and constants. It is only sure of the common case, so an event
 * with anything unusual (not an object, a field missing, a value other than a str, int or float, a
 * key that is a float or an int beyond 2**53, a number beyond 2**53 to compare) goes to `slow`,
 * which the engine then evaluates exactly. It buffers entries exactly as the Python code does,
 * (data, id, True, *projection), in the same pending lists, so both share one window state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

#define MAX_FIELDS 64
#define EXACT_INT 9007199254740992LL /* 2**53: ints up to this compare exactly as doubles */

enum { OP_LT, OP_LE, OP_GT, OP_GE, OP_EQ, OP_NE, OP_COUNT };

typedef struct {
    Py_ssize_t field;
    int op;
    double literal;
    PyObject *text; /* owned: a string literal (= and != only), or NULL for a number */
} Filter;

/* the entry layout and row sources of joiner.engine.entries, exported below and checked there at import */
enum { FROM_EVENT, FROM_PARTNER, FROM_CONSTANT };
#define PROJECTION_AT 3 /* an entry: (data, event id, projection ok, *projection) */

typedef struct {
    PyObject_HEAD
    Py_ssize_t n_fields;
    PyObject **fields;          /* names of the top-level fields read, owned */
    Py_ssize_t n_keys;
    Py_ssize_t *keys;           /* field positions of the key parts */
    Py_ssize_t n_filters;
    Filter *filters;
    Py_ssize_t n_projection;
    Py_ssize_t *projection;     /* field positions of the values an entry carries */
    Py_ssize_t n_row;
    PyObject **row_keys;        /* the select's keys, owned */
    int *row_source;            /* FROM_EVENT, FROM_PARTNER: projection[index]; FROM_CONSTANT: constants[index] */
    Py_ssize_t *row_index;
    PyObject *constants;        /* tuple, owned */
    Py_ssize_t partner_size;    /* a partner entry with a projection has at least this many items */
} Arrival;

/* -- values ------------------------------------------------------------------------------------ */

static int
exact_int(PyObject *value, long long *out)
{
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow || x < -EXACT_INT || x > EXACT_INT)
        return 0;
    *out = x;
    return 1;
}

/* 1 with *out set when `value` is a float, or an int that a double holds exactly; else 0 */
static int
as_number(PyObject *value, double *out)
{
    if (PyFloat_CheckExact(value)) {
        *out = PyFloat_AS_DOUBLE(value);
        return 1;
    }
    long long x;
    if (PyLong_CheckExact(value) && exact_int(value, &x)) {
        *out = (double)x;
        return 1;
    }
    return 0;
}

/* a key used as it is: a str, or an int within 2**53 (a float or a bool takes the exact path) */
static int
is_plain_key(PyObject *value)
{
    long long x;
    return PyUnicode_CheckExact(value) || (PyLong_CheckExact(value) && exact_int(value, &x));
}

static int
holds(int op, double value, double literal)
{
    switch (op) {
    case OP_LT: return value < literal;
    case OP_LE: return value <= literal;
    case OP_GT: return value > literal;
    case OP_GE: return value >= literal;
    case OP_EQ: return value == literal;
    default: return value != literal;
    }
}

/* -- construction ------------------------------------------------------------------------------ */

static Py_ssize_t *
index_array(PyObject *sequence, Py_ssize_t *length, Py_ssize_t bound, const char *what)
{
    PyObject *fast = PySequence_Fast(sequence, what);
    if (fast == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_ssize_t *out = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t x = PyLong_AsSsize_t(PySequence_Fast_GET_ITEM(fast, i));
        if (x == -1 && PyErr_Occurred())
            goto fail;
        if (x < 0 || x >= bound) {
            PyErr_Format(PyExc_ValueError, "%s: index %zd out of range", what, x);
            goto fail;
        }
        out[i] = x;
    }
    Py_DECREF(fast);
    *length = n;
    return out;
fail:
    Py_DECREF(fast);
    PyMem_Free(out);
    return NULL;
}

static PyObject **
name_array(PyObject *sequence, Py_ssize_t *length, const char *what)
{
    PyObject *fast = PySequence_Fast(sequence, what);
    if (fast == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **out = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    if (out == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyUnicode_CheckExact(name)) {
            PyErr_Format(PyExc_TypeError, "%s must be str", what);
            for (Py_ssize_t j = 0; j < i; j++)
                Py_DECREF(out[j]);
            PyMem_Free(out);
            Py_DECREF(fast);
            return NULL;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        out[i] = name;
    }
    Py_DECREF(fast);
    *length = n;
    return out;
}

static void
Arrival_dealloc(Arrival *self)
{
    for (Py_ssize_t i = 0; self->fields && i < self->n_fields; i++)
        Py_XDECREF(self->fields[i]);
    for (Py_ssize_t i = 0; self->row_keys && i < self->n_row; i++)
        Py_XDECREF(self->row_keys[i]);
    for (Py_ssize_t i = 0; self->filters && i < self->n_filters; i++)
        Py_XDECREF(self->filters[i].text);
    Py_XDECREF(self->constants);
    PyMem_Free(self->fields);
    PyMem_Free(self->keys);
    PyMem_Free(self->filters);
    PyMem_Free(self->projection);
    PyMem_Free(self->row_keys);
    PyMem_Free(self->row_source);
    PyMem_Free(self->row_index);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Arrival_init(Arrival *self, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"fields", "keys", "filters", "projection", "row", "partner_projection", "constants", NULL};
    PyObject *fields, *keys, *filters, *projection, *row, *constants = NULL;
    Py_ssize_t partner_projection;
    if (self->fields != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Arrival is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOn|O!:Arrival", names, &fields, &keys, &filters,
                                     &projection, &row, &partner_projection, &PyTuple_Type, &constants))
        return -1;
    self->constants = constants != NULL ? constants : PyTuple_New(0);
    if (self->constants == NULL)
        return -1;
    if (constants != NULL)
        Py_INCREF(constants);
    self->fields = name_array(fields, &self->n_fields, "fields");
    if (self->fields == NULL)
        return -1;
    if (self->n_fields > MAX_FIELDS) {
        PyErr_Format(PyExc_ValueError, "at most %d fields", MAX_FIELDS);
        return -1;
    }
    self->keys = index_array(keys, &self->n_keys, self->n_fields, "keys");
    if (self->keys == NULL)
        return -1;
    if (self->n_keys == 0) {
        PyErr_SetString(PyExc_ValueError, "a hash join needs a key");
        return -1;
    }
    self->projection = index_array(projection, &self->n_projection, self->n_fields, "projection");
    if (self->projection == NULL)
        return -1;

    PyObject *fast = PySequence_Fast(filters, "filters");
    if (fast == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    self->filters = PyMem_Calloc(n ? n : 1, sizeof(Filter));
    if (self->filters == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    self->n_filters = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        Filter *filter = &self->filters[i];
        PyObject *literal;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "niO:filter", &filter->field, &filter->op,
                              &literal)) {
            Py_DECREF(fast);
            return -1;
        }
        if (filter->field < 0 || filter->field >= self->n_fields || filter->op < 0 || filter->op >= OP_COUNT) {
            Py_DECREF(fast);
            PyErr_SetString(PyExc_ValueError, "filter: field or operator out of range");
            return -1;
        }
        if (PyUnicode_CheckExact(literal)) {
            if (filter->op != OP_EQ && filter->op != OP_NE) {
                Py_DECREF(fast);
                PyErr_SetString(PyExc_ValueError, "filter: a string literal takes = or != only");
                return -1;
            }
            Py_INCREF(literal);
            filter->text = literal;
        } else {
            filter->literal = PyFloat_AsDouble(literal);
            if (filter->literal == -1.0 && PyErr_Occurred()) {
                Py_DECREF(fast);
                return -1;
            }
        }
    }
    Py_DECREF(fast);

    fast = PySequence_Fast(row, "row");
    if (fast == NULL)
        return -1;
    n = PySequence_Fast_GET_SIZE(fast);
    self->row_keys = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    self->row_source = PyMem_Calloc(n ? n : 1, sizeof(int));
    self->row_index = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    if (self->row_keys == NULL || self->row_source == NULL || self->row_index == NULL) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    self->n_row = n;
    self->partner_size = 3;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *name;
        int source;
        Py_ssize_t index;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "Uin:row", &name, &source, &index)) {
            Py_DECREF(fast);
            return -1;
        }
        if (source != FROM_EVENT && source != FROM_PARTNER && source != FROM_CONSTANT) {
            Py_DECREF(fast);
            PyErr_Format(PyExc_ValueError, "row: source %d is not 0 (event), 1 (partner) or 2 (constant)", source);
            return -1;
        }
        Py_ssize_t bound = source == FROM_PARTNER ? partner_projection
                           : source == FROM_EVENT ? self->n_projection
                                                  : PyTuple_GET_SIZE(self->constants);
        if (index < 0 || index >= bound) {
            Py_DECREF(fast);
            PyErr_Format(PyExc_ValueError, "row: index %zd out of range", index);
            return -1;
        }
        Py_INCREF(name);
        PyUnicode_InternInPlace(&name);
        self->row_keys[i] = name;
        self->row_source[i] = source;
        self->row_index[i] = index;
        if (source == FROM_PARTNER && PROJECTION_AT + index + 1 > self->partner_size)
            self->partner_size = PROJECTION_AT + index + 1;
    }
    Py_DECREF(fast);
    return 0;
}

/* -- arrival ----------------------------------------------------------------------------------- */

typedef struct {
    PyObject *pending_keys, *pending_entries, *theirs, *their_odd, *rows, *slow, *pair;
    Py_ssize_t accepted, filtered, pairs;
} Batch;

static PyObject *
make_row(Arrival *self, PyObject *entry, PyObject *partner)
{
    PyObject *row = PyDict_New();
    if (row == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->n_row; i++) {
        Py_ssize_t index = self->row_index[i];
        PyObject *value = self->row_source[i] == FROM_CONSTANT ? PyTuple_GET_ITEM(self->constants, index)
                          : PyTuple_GET_ITEM(self->row_source[i] == FROM_PARTNER ? partner : entry, PROJECTION_AT + index);
        if (PyDict_SetItem(row, self->row_keys[i], value) < 0) {
            Py_DECREF(row);
            return NULL;
        }
    }
    return row;
}

static int
call_pair(Batch *batch, PyObject *entry, PyObject *partner, PyObject *full)
{
    PyObject *result = PyObject_CallFunctionObjArgs(batch->pair, entry, partner, full, NULL);
    if (result == NULL)
        return -1;
    Py_DECREF(result);
    return 0;
}

/* pair a buffered entry with the partners of its key; -1 on error */
static int
pair_with(Arrival *self, Batch *batch, PyObject *entry, PyObject *partners)
{
    Py_ssize_t n = PyList_GET_SIZE(partners);
    batch->pairs += n;
    Py_INCREF(partners); /* the pair callback runs Python: keep the list alive */
    int status = 0;
    for (Py_ssize_t j = 0; j < n && j < PyList_GET_SIZE(partners) && status == 0; j++) {
        PyObject *partner = PyList_GET_ITEM(partners, j);
        Py_INCREF(partner);
        if (!PyTuple_Check(partner) || PyTuple_GET_SIZE(partner) < self->partner_size ||
            PyTuple_GET_ITEM(partner, 2) != Py_True) {
            status = call_pair(batch, entry, partner, Py_False); /* no projection: exact */
        } else {
            PyObject *row = make_row(self, entry, partner);
            status = row == NULL ? -1 : PyList_Append(batch->rows, row);
            Py_XDECREF(row);
        }
        Py_DECREF(partner);
    }
    Py_DECREF(partners);
    return status;
}

static PyObject *
key_of(Arrival *self, PyObject **values)
{
    if (self->n_keys == 1) {
        PyObject *key = values[self->keys[0]];
        if (!is_plain_key(key))
            return Py_None; /* not an error: the exact path decides */
        Py_INCREF(key);
        return key;
    }
    for (Py_ssize_t i = 0; i < self->n_keys; i++)
        if (!is_plain_key(values[self->keys[i]]))
            return Py_None;
    PyObject *key = PyTuple_New(self->n_keys);
    if (key == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->n_keys; i++) {
        PyObject *part = values[self->keys[i]];
        Py_INCREF(part);
        PyTuple_SET_ITEM(key, i, part);
    }
    return key;
}

/* Events are taken in chunks, in passes. The first reads each event, filters it, buffers its entry
 * and finds its partners; the next ones prefetch what making the rows reads (the partners' list,
 * their entries, the values of those the row takes), and the last makes the rows. With thousands of
 * keys these are all over memory, beyond the CPU's caches: one event at a time, each load would
 * wait for the one before; a chunk at a time, the loads of different events overlap. */
#define CHUNK 16
#define PREFETCHED_PARTNERS 4
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(address) __builtin_prefetch(address)
#else
#define PREFETCH(address) ((void)(address))
#endif

typedef struct {
    PyObject *entry;    /* owned */
    PyObject *key;      /* owned */
    PyObject *partners; /* owned: the other stream's bucket of the key, or NULL */
} Candidate;

/* first pass over one event: 1 with *candidate filled, 0 when it was filtered or left in `slow`,
 * -1 on error */
static int
read_event(Arrival *self, Batch *batch, PyObject *item, Candidate *candidate)
{
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) < 2)
        return PyList_Append(batch->slow, item);
    PyObject *data = PyTuple_GET_ITEM(item, 0);
    if (!PyDict_CheckExact(data))
        return PyList_Append(batch->slow, item);

    PyObject *values[MAX_FIELDS]; /* borrowed from data, which the item holds */
    for (Py_ssize_t f = 0; f < self->n_fields; f++) {
        PyObject *value = PyDict_GetItemWithError(data, self->fields[f]);
        if (value == NULL) {
            if (PyErr_Occurred())
                return -1;
            return PyList_Append(batch->slow, item); /* missing: malformed, the exact path says why */
        }
        if (!PyUnicode_CheckExact(value) && !PyLong_CheckExact(value) && !PyFloat_CheckExact(value))
            return PyList_Append(batch->slow, item);
        values[f] = value;
    }
    for (Py_ssize_t i = 0; i < self->n_filters; i++) {
        const Filter *filter = &self->filters[i];
        int kept;
        if (filter->text != NULL) {
            /* JSONata's = between a string and a number is false, not an error */
            PyObject *value = values[filter->field];
            int equal = 0;
            if (PyUnicode_CheckExact(value)) {
                equal = PyUnicode_Compare(value, filter->text) == 0;
                if (PyErr_Occurred())
                    return -1;
            }
            kept = filter->op == OP_EQ ? equal : !equal;
        } else {
            double number;
            if (!as_number(values[filter->field], &number))
                return PyList_Append(batch->slow, item);
            kept = holds(filter->op, number, filter->literal);
        }
        if (!kept) {
            batch->filtered++;
            return 0;
        }
    }
    PyObject *key = key_of(self, values);
    if (key == NULL)
        return -1;
    if (key == Py_None)
        return PyList_Append(batch->slow, item);

    int status = -1;
    PyObject *entry = PyTuple_New(PROJECTION_AT + self->n_projection);
    if (entry == NULL)
        goto done;
    Py_INCREF(data);
    PyTuple_SET_ITEM(entry, 0, data);
    PyObject *id = PyTuple_GET_ITEM(item, 1);
    Py_INCREF(id);
    PyTuple_SET_ITEM(entry, 1, id);
    Py_INCREF(Py_True);
    PyTuple_SET_ITEM(entry, 2, Py_True);
    for (Py_ssize_t p = 0; p < self->n_projection; p++) {
        PyObject *value = values[self->projection[p]];
        Py_INCREF(value);
        PyTuple_SET_ITEM(entry, PROJECTION_AT + p, value);
    }
    /* buffered in arrival order; the engine files it under its key when the other stream needs it */
    if (PyList_Append(batch->pending_keys, key) < 0 || PyList_Append(batch->pending_entries, entry) < 0)
        goto done;
    batch->accepted++;
    PREFETCH(key); /* its hash, for the lookup of the next pass */
    candidate->entry = entry;
    candidate->key = key;
    return 1;
done:
    Py_XDECREF(entry);
    Py_DECREF(key);
    return status;
}

/* second pass: the partners of each event; -1 on error */
static int
find_partners(Batch *batch, Candidate *candidates, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *partners = PyDict_GetItemWithError(batch->theirs, candidates[i].key);
        if (partners == NULL && PyErr_Occurred())
            return -1;
        if (partners != NULL && PyList_Check(partners)) {
            Py_INCREF(partners); /* a store: it does not wait for the load */
            candidates[i].partners = partners;
        }
    }
    return 0;
}

/* last pass over one event: its rows, and its pairs with partners of unusual keys; -1 on error */
static int
pair_event(Arrival *self, Batch *batch, Candidate *candidate)
{
    PyObject *entry = candidate->entry;
    PyObject *partners = candidate->partners;
    if (partners != NULL && PyList_GET_SIZE(partners) > 0 && pair_with(self, batch, entry, partners) < 0)
        return -1;
    Py_ssize_t odd = PyList_GET_SIZE(batch->their_odd);
    if (odd == 0)
        return 0;
    /* partners whose key is not a plain value: the whole where decides, exactly */
    batch->pairs += odd;
    PyObject *their_odd = batch->their_odd;
    Py_INCREF(their_odd);
    int status = 0;
    for (Py_ssize_t j = 0; j < odd && j < PyList_GET_SIZE(their_odd) && status == 0; j++) {
        PyObject *partner = PyList_GET_ITEM(their_odd, j);
        Py_INCREF(partner);
        status = call_pair(batch, entry, partner, Py_True);
        Py_DECREF(partner);
    }
    Py_DECREF(their_odd);
    return status;
}

static void
prefetch_partner_lists(Candidate *candidates, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (candidates[i].partners != NULL)
            PREFETCH(((PyListObject *)candidates[i].partners)->ob_item);
}

static void
prefetch_partner_entries(Candidate *candidates, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *partners = candidates[i].partners;
        if (partners == NULL)
            continue;
        Py_ssize_t size = PyList_GET_SIZE(partners);
        for (Py_ssize_t j = 0; j < size && j < PREFETCHED_PARTNERS; j++)
            PREFETCH(PyList_GET_ITEM(partners, j));
    }
}

static void
prefetch_row_values(Arrival *self, Candidate *candidates, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *partners = candidates[i].partners;
        if (partners == NULL)
            continue;
        Py_ssize_t size = PyList_GET_SIZE(partners);
        for (Py_ssize_t j = 0; j < size && j < PREFETCHED_PARTNERS; j++) {
            PyObject *partner = PyList_GET_ITEM(partners, j);
            if (!PyTuple_Check(partner) || PyTuple_GET_SIZE(partner) < self->partner_size)
                continue;
            for (Py_ssize_t r = 0; r < self->n_row; r++)
                if (self->row_source[r] == FROM_PARTNER)
                    PREFETCH(PyTuple_GET_ITEM(partner, PROJECTION_AT + self->row_index[r]));
        }
    }
}

/* entries[start:stop]: -1 on error */
static int
take_chunk(Arrival *self, Batch *batch, PyObject *entries, Py_ssize_t start, Py_ssize_t stop)
{
    Candidate candidates[CHUNK];
    Py_ssize_t n = 0;
    int status = 0;
    for (Py_ssize_t i = start; i < stop && status == 0; i++) {
        candidates[n] = (Candidate){NULL, NULL, NULL};
        status = read_event(self, batch, PyList_GET_ITEM(entries, i), &candidates[n]);
        if (status > 0) {
            n++;
            status = 0;
        }
    }
    if (status == 0)
        status = find_partners(batch, candidates, n);
    if (status == 0) {
        prefetch_partner_lists(candidates, n);
        prefetch_partner_entries(candidates, n);
        prefetch_row_values(self, candidates, n);
    }
    for (Py_ssize_t i = 0; i < n && status == 0; i++)
        status = pair_event(self, batch, &candidates[i]);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(candidates[i].entry);
        Py_DECREF(candidates[i].key);
        Py_XDECREF(candidates[i].partners);
    }
    return status;
}

static PyObject *
Arrival_call(Arrival *self, PyObject *args, PyObject *kwargs)
{
    PyObject *entries;
    Batch batch = {0};
    if (self->fields == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Arrival is not initialised");
        return NULL;
    }
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "Arrival takes positional arguments only");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!O:Arrival", &PyList_Type, &entries, &PyList_Type,
                          &batch.pending_keys, &PyList_Type, &batch.pending_entries, &PyDict_Type, &batch.theirs,
                          &PyList_Type, &batch.their_odd, &PyList_Type, &batch.rows, &PyList_Type, &batch.slow,
                          &batch.pair))
        return NULL;
    /* the pair callback runs Python: iterate over a copy, whatever it does to the caller's list */
    PyObject *items = PyList_GetSlice(entries, 0, PyList_GET_SIZE(entries));
    if (items == NULL)
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(items);
    for (Py_ssize_t start = 0; start < n; start += CHUNK) {
        if (take_chunk(self, &batch, items, start, start + CHUNK < n ? start + CHUNK : n) < 0) {
            Py_DECREF(items);
            return NULL;
        }
    }
    Py_DECREF(items);
    return Py_BuildValue("(nnn)", batch.accepted, batch.filtered, batch.pairs);
}

/* file pending entries under their keys: buckets[key].append(entry), in order */
static PyObject *
file_pending(PyObject *module, PyObject *args)
{
    PyObject *buckets, *keys, *entries;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!O!O!:file_pending", &PyDict_Type, &buckets, &PyList_Type, &keys, &PyList_Type,
                          &entries))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(entries) != n) {
        PyErr_SetString(PyExc_ValueError, "file_pending: as many keys as entries");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i), *entry = PyList_GET_ITEM(entries, i);
        PyObject *bucket = PyDict_GetItemWithError(buckets, key);
        if (bucket == NULL) {
            if (PyErr_Occurred())
                return NULL;
            PyObject *fresh = PyList_New(1);
            if (fresh == NULL)
                return NULL;
            Py_INCREF(entry);
            PyList_SET_ITEM(fresh, 0, entry);
            int set = PyDict_SetItem(buckets, key, fresh);
            Py_DECREF(fresh);
            if (set < 0)
                return NULL;
        } else if (!PyList_Check(bucket)) {
            PyErr_SetString(PyExc_TypeError, "a bucket of the window is not a list");
            return NULL;
        } else if (PyList_Append(bucket, entry) < 0) {
            return NULL;
        }
    }
    if (PyList_SetSlice(keys, 0, n, NULL) < 0 || PyList_SetSlice(entries, 0, n, NULL) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* the span of a batch's event times, when every entry's data is a dict whose field `name` is a finite
   float or int (not bool): (lowest, latest, position of the first latest), else None */
static PyObject *
number_span(PyObject *module, PyObject *args)
{
    PyObject *entries, *name;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!U:number_span", &PyList_Type, &entries, &name))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(entries), latest_at = 0;
    double lowest = 0.0, latest = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *entry = PyList_GET_ITEM(entries, i);
        if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) < 1 || !PyDict_CheckExact(PyTuple_GET_ITEM(entry, 0)))
            Py_RETURN_NONE;
        PyObject *value = PyDict_GetItemWithError(PyTuple_GET_ITEM(entry, 0), name);
        double number;
        if (value == NULL) {
            if (PyErr_Occurred())
                return NULL;
            Py_RETURN_NONE;
        }
        if (PyFloat_CheckExact(value)) {
            number = PyFloat_AS_DOUBLE(value);
        } else if (PyLong_CheckExact(value)) {
            number = PyLong_AsDouble(value);
            if (number == -1.0 && PyErr_Occurred()) {
                PyErr_Clear(); /* beyond a double: not a time this takes */
                Py_RETURN_NONE;
            }
        } else {
            Py_RETURN_NONE;
        }
        if (!isfinite(number))
            Py_RETURN_NONE;
        if (i == 0 || number < lowest)
            lowest = number;
        if (i == 0 || number > latest) {
            latest = number;
            latest_at = i;
        }
    }
    if (n == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("ddn", lowest, latest, latest_at);
}

static PyMethodDef arrival_functions[] = {
    {"file_pending", file_pending, METH_VARARGS,
     PyDoc_STR("file_pending(buckets, keys, entries): buckets[key].append(entry) in order, then empty both lists")},
    {"number_span", number_span, METH_VARARGS,
     PyDoc_STR("number_span(entries, name): (lowest, latest, position of latest) of entry[0][name] when every "
               "one is a finite float or int, else None")},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ArrivalType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "join_kernel._arrival.Arrival",
    .tp_doc = PyDoc_STR(
        "Arrival(fields, keys, filters, projection, row, partner_projection)\n\n"
        "The arrival loop of one stream. Called as\n"
        "(entries, pending_keys, pending_entries, theirs, their_odd, rows, slow, pair)\n"
        "-> (accepted, filtered, pairs), like the engine's generated loop."),
    .tp_basicsize = sizeof(Arrival),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Arrival_init,
    .tp_dealloc = (destructor)Arrival_dealloc,
    .tp_call = (ternaryfunc)Arrival_call,
};

static int
arrival_exec(PyObject *module)
{
    if (PyType_Ready(&ArrivalType) < 0)
        return -1;
    Py_INCREF(&ArrivalType);
    if (PyModule_AddObject(module, "Arrival", (PyObject *)&ArrivalType) < 0) {
        Py_DECREF(&ArrivalType);
        return -1;
    }
    const char *ops[] = {"<", "<=", ">", ">=", "=", "!="};
    PyObject *operators = PyDict_New();
    if (operators == NULL)
        return -1;
    for (int op = 0; op < OP_COUNT; op++) {
        PyObject *code = PyLong_FromLong(op);
        if (code == NULL || PyDict_SetItemString(operators, ops[op], code) < 0) {
            Py_XDECREF(code);
            Py_DECREF(operators);
            return -1;
        }
        Py_DECREF(code);
    }
    if (PyModule_AddObject(module, "OPERATORS", operators) < 0) {
        Py_DECREF(operators);
        return -1;
    }
    if (PyModule_AddIntConstant(module, "PROJECTION_AT", PROJECTION_AT) < 0 ||
        PyModule_AddIntConstant(module, "FROM_EVENT", FROM_EVENT) < 0 ||
        PyModule_AddIntConstant(module, "FROM_PARTNER", FROM_PARTNER) < 0 ||
        PyModule_AddIntConstant(module, "FROM_CONSTANT", FROM_CONSTANT) < 0 ||
        PyModule_AddIntConstant(module, "MAX_FIELDS", MAX_FIELDS) < 0)
        return -1;
    PyObject *exact = PyLong_FromLongLong(EXACT_INT);
    if (exact == NULL || PyModule_AddObject(module, "EXACT_INT", exact) < 0) {
        Py_XDECREF(exact);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot arrival_slots[] = {
    {Py_mod_exec, arrival_exec},
    {0, NULL},
};

static struct PyModuleDef arrival_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "join_kernel._arrival",
    .m_doc = "The joiner's arrival loop in C (see join_kernel).",
    .m_size = 0,
    .m_methods = arrival_functions,
    .m_slots = arrival_slots,
};

PyMODINIT_FUNC
PyInit__arrival(void)
{
    return PyModuleDef_Init(&arrival_module);
}
