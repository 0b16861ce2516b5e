//! `runai replay`: placeholder replaced below.
