import streamlit as st

st.title("classify")
